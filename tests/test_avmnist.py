"""AV-MNIST-style adapter and its prepared cache, on files written in the real layout, and on ../shared/data."""

from __future__ import annotations

import dataclasses
import gzip
import struct
import time
import wave

import numpy as np
import pytest
import torch
from call_spies import count_calls, interrupt_at_call

import bench.datasets.avmnist as avmnist
from bench.errors import UsageError
from bench.loop import run_cell
from bench.testing import tiny_spec

SPEAKERS = ("alice", "bob")
REPETITIONS = range(8)  # 0-4 are FSDD's test recordings, 5-7 train


def _write_idx(path, array: np.ndarray, magic: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _write_wav(path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes((np.clip(samples, -1, 0.999) * 32768).astype("<i2").tobytes())


def write_tiny_avmnist(root, *, per_digit=(12, 10)) -> None:
    """MNIST IDX .gz files and FSDD-named wavs in the real layout: each digit a pixel block and a tone."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "t10k"), per_digit):
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 40, size=(len(labels), 28, 28))
        for i, digit in enumerate(labels):
            images[i, 2 * digit : 2 * digit + 6, 4:24] = 255
        _write_idx(root / "mnist" / "raw" / f"{split}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(root / "mnist" / "raw" / f"{split}-labels-idx1-ubyte.gz", labels, 2049)
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    t = np.arange(int(0.3 * 8000)) / 8000
    for digit in range(10):
        for speaker in SPEAKERS:
            for index in REPETITIONS:
                tone = 0.3 * np.sin(2 * np.pi * (300 + 300 * digit) * t) + 0.01 * rng.standard_normal(len(t))
                _write_wav(recordings / f"{digit}_{speaker}_{index}.wav", tone)


@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_tiny_avmnist(root)
    return root


def test_trains_one_epoch_end_to_end(tiny_root, tmp_path):
    spec = dataclasses.replace(tiny_spec("late_fusion"), dataset="avmnist", epochs=1)
    result = run_cell(spec, data_root=tiny_root)
    sizes = result["notes"]["split_sizes"]
    assert sizes["train"] + sizes["val"] == 10 * len(SPEAKERS) * 3
    assert sizes["test"] == result["metrics"]["num_test_samples"] == 10 * len(SPEAKERS) * 5
    assert result["notes"]["validation"].startswith("carved from train")
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert len(list((tmp_path / "cache" / "avmnist").glob("v1-*/manifest.json"))) == 1


def test_shapes_ranges_and_pairing(tiny_root):
    data = avmnist.AVMNIST.load(tiny_root)
    assert [(m.name, m.shape, m.kind) for m in data.modalities] == [
        ("audio", (1, 40, 63), "spectrogram"),
        ("image", (1, 28, 28), "image"),
    ]
    assert data.val is None
    for split in (data.train, data.test):
        image = split.inputs["image"]
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert split.inputs["audio"].dtype == image.dtype == torch.float32
        assert np.bincount(split.labels.numpy(), minlength=10).tolist() == [len(split) // 10] * 10
    again = dataclasses.replace(avmnist.AVMNIST).load(tiny_root)  # same options: same cache, same pairs
    assert (again.train.inputs["image"] == data.train.inputs["image"]).all()


def test_second_load_reads_the_cache_without_decoding(tiny_root, monkeypatch):
    calls = count_calls(monkeypatch, avmnist, "read_wav")
    first = avmnist.AVMNIST.load(tiny_root)
    assert calls[0] == 10 * len(SPEAKERS) * len(REPETITIONS)
    (manifest,) = (tiny_root.parent / "cache" / "avmnist").glob("v1-*/manifest.json")
    stamp = manifest.stat().st_mtime_ns
    second = avmnist.AVMNIST.load(tiny_root)
    assert calls[0] == 10 * len(SPEAKERS) * len(REPETITIONS)
    assert manifest.stat().st_mtime_ns == stamp
    assert (first.train.inputs["audio"] == second.train.inputs["audio"]).all()


def test_other_options_get_their_own_cache(tiny_root):
    clean = dataclasses.replace(avmnist.AVMNIST, pca_energy_removed=0.0)
    assert clean.cache_path(tiny_root) != avmnist.AVMNIST.cache_path(tiny_root)
    image = clean.load(tiny_root).train.inputs["image"]
    assert float(image.max()) == 1.0  # plain pixels / 255


def test_corrupt_wav_is_one_line_naming_the_file(tiny_root):
    path = tiny_root / "fsdd" / "recordings" / "3_bob_6.wav"
    path.write_bytes(b"RIFF\x00\x00not a wave file at all")
    with pytest.raises(UsageError) as err:
        avmnist.AVMNIST.load(tiny_root)
    message = str(err.value)
    assert str(path) in message and "download it again" in message and "\n" not in message


def test_truncated_wav_is_one_line_naming_the_file(tiny_root):
    path = tiny_root / "fsdd" / "recordings" / "0_alice_2.wav"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UsageError, match="truncated") as err:
        avmnist.AVMNIST.load(tiny_root)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_idx_gz_is_one_line_naming_the_file(tiny_root):
    path = tiny_root / "mnist" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(UsageError) as err:
        avmnist.AVMNIST.load(tiny_root)
    message = str(err.value)
    assert str(path) in message and "download it again" in message and "\n" not in message


@pytest.mark.parametrize("where", ["decoding", "writing"])
def test_interrupted_preparation_leaves_no_cache(tiny_root, monkeypatch, where):
    import bench.media.cache

    if where == "decoding":
        interrupt_at_call(monkeypatch, avmnist, "log_mel", 1)
    else:  # after some arrays are already written into the temporary directory
        calls = interrupt_at_call(monkeypatch, bench.media.cache.np, "save", 3)
    with pytest.raises(KeyboardInterrupt):
        avmnist.AVMNIST.load(tiny_root)
    if where == "writing":
        assert calls[0] == 3
    cache = tiny_root.parent / "cache" / "avmnist"
    assert not cache.exists() or list(cache.iterdir()) == []  # neither the cache nor a temporary directory
    assert avmnist.AVMNIST.status(tiny_root)[0] == "raw found"
    monkeypatch.undo()
    monkeypatch.setenv("BENCH_CACHE", str(tiny_root.parent / "cache"))
    avmnist.AVMNIST.load(tiny_root)
    assert avmnist.AVMNIST.status(tiny_root)[0] == "prepared"


def test_temporary_directory_of_a_killed_preparation_is_removed(tiny_root):
    import socket

    final = avmnist.AVMNIST.cache_path(tiny_root)
    left = final.parent / f".{final.name}.tmp-{socket.gethostname()}-999999999-x"  # no such pid
    left.mkdir(parents=True)
    (left / "train_audio.npy").write_bytes(b"half")
    avmnist.AVMNIST.load(tiny_root)
    assert not left.exists() and sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_bench_data_without_a_data_root(run_cli, monkeypatch, tmp_path):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    code, out, _ = run_cli("data")
    assert code == 0 and "data root: none" in out
    assert "avmnist: missing: no data root" in out
    assert "https://github.com/Jakobovski/free-spoken-digit-dataset" in out and "CC BY-SA 4.0" in out
    for name in ("cub", "handwritten", "scene15", "landuse21"):
        assert f"{name}: missing" in out
    code, _, err = run_cli("data", "prepare", "avmnist")
    assert code == 2 and "not available: no data root" in err and err.count("\n") == 1


def test_bench_data_with_a_data_root_then_prepare(run_cli, tiny_root):
    code, out, _ = run_cli("data", "--data-root", str(tiny_root))
    assert code == 0 and "avmnist: raw found: not prepared yet" in out
    assert "mnist/raw/" in out and "fsdd/recordings/" in out  # the layout
    assert "handwritten: missing" in out
    code, out, _ = run_cli("data", "prepare", "avmnist", "--data-root", str(tiny_root))
    assert code == 0 and "avmnist: prepared in" in out
    code, out, _ = run_cli("data", "--data-root", str(tiny_root))
    assert "avmnist: prepared: cache" in out and "(60 train / 100 test pairs)" in out
    code, out, _ = run_cli("data", "prepare", "avmnist", "--data-root", str(tiny_root))
    assert code == 0 and "already prepared" in out
    code, _, err = run_cli("data", "prepare", "--data-root", str(tiny_root))
    assert code == 2 and "needs a dataset name" in err


def test_real_data_split_sizes(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    started = time.perf_counter()
    data = avmnist.AVMNIST.load(data_root)
    prepare_seconds = time.perf_counter() - started
    assert len(data.train) == 2700 and len(data.test) == 300
    assert np.bincount(data.train.labels.numpy()).tolist() == [270] * 10
    assert np.bincount(data.test.labels.numpy()).tolist() == [30] * 10
    assert tuple(data.train.inputs["audio"].shape[1:]) == (1, 40, 63)
    assert prepare_seconds < 60, f"preparing the real data took {prepare_seconds:.0f} s"  # measured ~10 s on 2 cores
