"""CPU kernels: native by default, the AVX2 pin on request (--cpu-kernels avx2 or BENCH_CPU_KERNELS=avx2), the
setting named in every record, and bench verify re-running a record under the setting it names (bench.kernels).
"""

import json
import os
import platform
import subprocess
import sys

import pytest
from cli_helpers import grid_args, read_records

from bench import kernels

PINNED = kernels.KERNEL_VARIABLES
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 pin only")
CELL = grid_args(missing_rates="0.5", epochs="2")


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in PINNED and k != kernels.ENV_VARIABLE} | extra


def _after_import(extra_env: dict[str, str]) -> list:
    code = (
        "import bench, json, os, torch; from bench.cells import environment; e = environment(); "
        f"print(json.dumps([os.environ.get(n) for n in {PINNED!r}] + [e['cpu_kernels'], e['cpu_kernel_env']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(extra_env), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _native_capability() -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"  # torch alone: no bench, no pin
    return subprocess.run(
        [sys.executable, "-c", code], env=_clean_env({}), capture_output=True, text=True, check=True
    ).stdout.strip()


@x86_only
def test_import_leaves_native_kernels_and_records_them():
    assert _after_import({}) == [None, None, None, _native_capability(), {}]


@x86_only
def test_environment_setting_pins_avx2_and_records_it():
    assert _after_import({kernels.ENV_VARIABLE: "avx2"}) == ["avx2", "AVX2", "AVX2", "AVX2", AVX2]


@x86_only
def test_a_users_own_setting_wins_over_the_environment_setting():
    seen = _after_import({kernels.ENV_VARIABLE: "avx2", "ATEN_CPU_CAPABILITY": "default"})
    assert (seen[0], seen[3]) == ("default", "DEFAULT")
    assert seen[4] == AVX2 | {"ATEN_CPU_CAPABILITY": "default"}


def test_records_made_before_the_setting_was_recorded_infer_the_old_default_pin():
    linux = "Linux-6.1-x86_64-with-glibc2.36"
    assert kernels.recorded_kernel_env({"environment": {"cpu_kernels": "AVX2", "platform": linux}}) == AVX2
    assert kernels.recorded_kernel_env({"environment": {"platform": linux}}) == AVX2  # older: AVX2 machines
    own = kernels.recorded_kernel_env({"environment": {"cpu_kernels": "DEFAULT", "platform": linux}})
    assert own == AVX2 | {"ATEN_CPU_CAPABILITY": "default"}
    assert (
        kernels.recorded_kernel_env({"environment": {"cpu_kernels": "DEFAULT", "platform": "macOS-14-arm64-arm-64bit"}})
        == {}
    )
    assert kernels.recorded_kernel_env({"environment": {"cpu_kernels": "AVX2", "cpu_kernel_env": {}}}) == {}


@x86_only
def test_a_pinned_record_is_rerun_pinned_by_verify(run_cli, tmp_path):
    """The record is made by a pinned command; verify runs in this (native) test process, so it must start a
    pinned child for the cell, and the cell must come back bit for bit."""
    assert kernels.kernel_env() == {}, "the test process itself must run native kernels"
    pinned = tmp_path / "pinned"
    subprocess.run(
        [sys.executable, "-m", "bench", "run", *CELL, "--results", str(pinned), "--cpu-kernels", "avx2"],
        env=_clean_env({}),
        check=True,
        capture_output=True,
    )
    (record,) = read_records(pinned)
    assert record["environment"]["cpu_kernels"] == "AVX2" and record["environment"]["cpu_kernel_env"] == AVX2

    (fresh,) = kernels.rerun(record, data_root=None, threads=1)
    assert fresh["environment"]["cpu_kernel_env"] == AVX2 and fresh["environment"]["cpu_kernels"] == "AVX2"
    assert fresh["metrics"] == record["metrics"]

    code, out, err = run_cli("verify", "--results", str(pinned), "--sample", "1", "--seed", "0")
    assert code == 0 and out.count("  same  ") == 1, out + err
    # A record of the same cell made with native kernels re-runs in this process, natively.
    native = tmp_path / "native"
    code, _, _ = run_cli("run", *CELL, "--results", str(native))
    (mine,) = read_records(native)
    assert code == 0 and mine["environment"]["cpu_kernel_env"] == {}
    assert mine["environment"]["cpu_kernels"] == _native_capability()
    code, out, _ = run_cli("verify", "--results", str(native), "--sample", "1", "--seed", "0")
    assert code == 0 and out.count("  same  ") == 1


@x86_only
def test_a_pin_asked_for_after_torch_was_imported_is_a_one_line_error(run_cli, tmp_path):
    code, out, err = run_cli("run", *CELL, "--results", str(tmp_path), "--cpu-kernels", "avx2")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert "before torch is imported" in err and not (tmp_path / "records").exists()


def test_an_unknown_environment_setting_is_a_one_line_error(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.ENV_VARIABLE, "avx9000")
    code, out, err = run_cli("run", *CELL, "--results", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "BENCH_CPU_KERNELS 'avx9000'" in err


def test_bf16_warning_names_the_cpu_without_bf16_and_the_pin():
    assert "without bf16 instructions" in kernels.bf16_warning("bf16", "cpu", flags={"avx2", "fma"}, env={})
    assert kernels.bf16_warning("bf16", "cpu", flags={"avx2", "avx512_bf16"}, env={}) is None
    assert kernels.bf16_warning("bf16", "cpu", flags={"amx_bf16"}, env={}) is None
    assert "AVX2 kernel pin" in kernels.bf16_warning("bf16", "cpu", flags={"amx_bf16"}, env=AVX2)
    assert kernels.bf16_warning("fp32", "cpu", flags={"avx2"}, env={}) is None
    assert kernels.bf16_warning("bf16", "cuda:0", flags={"avx2"}, env={}) is None


def test_bf16_on_a_cpu_without_bf16_prints_one_warning_line(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: {"fpu", "avx2", "fma"})
    code, _, err = run_cli(
        "run", *CELL, "--epochs", "1", "--results", str(tmp_path), "--precision", "bf16", "--device", "cpu"
    )
    warnings = [line for line in err.splitlines() if "--precision bf16" in line]
    assert code == 0 and len(warnings) == 1 and "many times slower" in warnings[0]
