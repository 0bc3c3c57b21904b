"""Records are bit-identical across x86 machines only if every machine runs the same kernel family:
importing bench pins torch, MKL and oneDNN to AVX2 unless the user set them (bench/__init__.py)."""

import json
import os
import platform
import subprocess
import sys

import pytest

PINNED = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 pin only")


def _after_import(extra_env: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED} | extra_env
    code = ("import bench, json, os, torch; from bench.cells import environment; "
            f"print(json.dumps([os.environ.get(n) for n in {PINNED!r}] + [environment()['cpu_kernels']]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@x86_only
def test_import_pins_avx2_kernels_and_records_them():
    assert _after_import({}) == ["avx2", "AVX2", "AVX2", "AVX2"]


@x86_only
def test_a_users_own_setting_wins():
    seen = _after_import({"ATEN_CPU_CAPABILITY": "default"})
    assert (seen[0], seen[-1]) == ("default", "DEFAULT")
