"""``describe(data_root)``: every dataset that has it tells what ``load`` gives without loading, and a cached
adapter's ``describe`` never decodes media nor builds its cache. Also pins avmnist's cache key, so caches
prepared before the shared :class:`bench.media.PreparedDataset` base are still found."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from media_fixtures import write_tiny_cremad, write_tiny_kinetics_sounds
from test_avmnist import write_tiny_avmnist
from test_avmnist_multibench import write_tiny_mnist_fsdd
from test_iemocap_mosei import write_mla_iemocap, write_multibench_pickle
from test_text_image_adapters import MVSA_ORDER, write_qmf_layout

import bench.datasets.avmnist as avmnist
import bench.datasets.cremad as cremad
import bench.datasets.kinetics_sounds as ks
from bench.data import carved_train_size, label_counts, load_dataset, stratified_rows, validation_rows
from bench.datasets.avmnist_multibench import AVMNIST_MULTIBENCH
from bench.datasets.iemocap import IEMOCAP
from bench.datasets.mosei import MOSEI
from bench.datasets.mvsa import MVSA
from bench.grid import dataset_description
from bench.media.cache import file_fingerprint
from bench.protocol import DataDescription
from bench.registry import DATASETS

DATASET_NAMES = [n for n in DATASETS.names() if DATASETS.error(n) is None]


def _assert_agrees(summary, loaded) -> None:
    assert summary.modalities == loaded.modalities
    assert summary.train_label_counts == label_counts(loaded.train.labels.numpy())
    assert summary.shipped_val == (loaded.val is not None)
    carved = len(loaded.train) if loaded.val is not None else len(validation_rows(loaded.train.labels)[0])
    assert summary.num_train == carved


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_describe_agrees_with_load(name, request):
    """Registry-driven: every registered dataset available here whose adapter has ``describe``."""
    adapter = DATASETS.get(name)
    if getattr(adapter, "describe", None) is None:
        pytest.skip(f"{name} has no describe(); the harness loads it")
    root = request.getfixturevalue("data_root") if adapter.info.needs_data_root else None
    ok, why = adapter.available(root)
    if not ok:
        pytest.skip(f"{name} is not available here: {why}")
    summary = adapter.describe(root)
    if summary is None:
        pytest.skip(f"{name} cannot describe itself without loading here")
    loaded = load_dataset(name, root)
    _assert_agrees(summary, loaded)
    expected = DataDescription(loaded.modalities, adapter.info.num_classes, summary.num_train)
    assert dataset_description(name, root) == expected


def _cache_files(cache) -> list:
    return sorted(p for p in cache.rglob("*")) if cache.exists() else []


def _mvsa(root):
    write_qmf_layout(root, "MVSA_Single", MVSA_ORDER, lambda split, label, serial: f"data/{serial}.jpg")
    return dataclasses.replace(MVSA, resize=36, image_size=32)


def _iemocap(root):
    write_mla_iemocap(root)
    return dataclasses.replace(IEMOCAP, image_size=32)


def _avmnist(root):
    write_tiny_avmnist(root)
    return avmnist.AVMNIST


def _avmnist_multibench(root):
    write_tiny_mnist_fsdd(root)
    return AVMNIST_MULTIBENCH


def _cremad(root):
    write_tiny_cremad(root)
    return dataclasses.replace(cremad.CREMAD, image_size=32)


def _kinetics_sounds(root):
    write_tiny_kinetics_sounds(root)
    return dataclasses.replace(ks.KINETICS_SOUNDS, image_size=32, fbank_frames=64)


@pytest.mark.parametrize(
    "write",
    [_avmnist, _avmnist_multibench, _cremad, _kinetics_sounds, _mvsa, _iemocap],
    ids=lambda w: w.__name__.strip("_"),
)
def test_describe_builds_no_cache_and_agrees_before_and_after_preparation(write, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    monkeypatch.delenv(cremad.VERIFY_ENV, raising=False)
    monkeypatch.delenv(ks.SKIP_ENV, raising=False)
    adapter = write(tmp_path / "data")
    before = adapter.describe(tmp_path / "data")
    assert before is not None
    assert _cache_files(cache) == []  # nothing decoded into a cache, no scratch, no memo
    loaded = adapter.load(tmp_path / "data")
    _assert_agrees(before, loaded)
    assert adapter.describe(tmp_path / "data") == before  # from the prepared cache's headers now


def test_describe_of_avmnist_decodes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    write_tiny_avmnist(tmp_path / "data")

    def no_decoding(*args, **kwargs):
        raise AssertionError("describe decoded a recording")

    monkeypatch.setattr(avmnist, "read_wav", no_decoding)
    monkeypatch.setattr(avmnist, "read_idx", no_decoding)
    summary = avmnist.AVMNIST.describe(tmp_path / "data")
    assert summary.num_train == carved_train_size(summary.train_label_counts)
    assert not (tmp_path / "cache").exists()


def test_mosei_describes_itself_only_once_prepared(tmp_path, monkeypatch):
    """Its shapes come from the pickle: before preparation ``describe`` says it cannot tell (None)."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    write_multibench_pickle(tmp_path / "data" / "mosei" / "mosei_senti_data.pkl")
    assert MOSEI.describe(tmp_path / "data") is None
    assert _cache_files(tmp_path / "cache") == []
    loaded = MOSEI.load(tmp_path / "data")
    _assert_agrees(MOSEI.describe(tmp_path / "data"), loaded)


def test_an_unavailable_dataset_is_not_described(tmp_path):
    with pytest.raises(Exception, match="not available"):
        avmnist.AVMNIST.describe(tmp_path)


# --------------------------------------------------------------------------------------------------
# The cache key and the stratified cut, as they were before the shared base


def test_avmnist_cache_key_of_the_tiny_layout(tmp_path):
    root = tmp_path / "data"
    write_tiny_avmnist(root)
    recordings = sorted((root / avmnist.RECORDINGS).glob("*.wav"))
    files = [root / p for p in avmnist.MNIST_FILES.values()] + recordings
    assert avmnist.AVMNIST._key(root) == {
        "audio": {"seconds": 1.0, "n_fft": 256, "hop": 128, "n_mels": 40},
        "pca_energy_removed": 0.75,
        "pair_seed": 0,
        "source": file_fingerprint(root, files),
    }


def test_avmnist_cache_key_of_the_real_data_is_the_one_prepared_before(data_root, tmp_path, monkeypatch):
    """The literal key and directory the adapter computed before it moved onto PreparedDataset."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    if not avmnist.AVMNIST.available(data_root)[0]:
        pytest.skip("no MNIST + FSDD under the data root")
    assert avmnist.AVMNIST._key(data_root) == {
        "audio": {"hop": 128, "n_fft": 256, "n_mels": 40, "seconds": 1.0},
        "pair_seed": 0,
        "pca_energy_removed": 0.75,
        "source": "48d231d5f709bfac",
    }
    assert avmnist.AVMNIST.cache_path(data_root) == tmp_path / "cache" / "avmnist" / "v1-a70b32ad8a89e8c9"
    assert AVMNIST_MULTIBENCH.cache_path(data_root).name == "v1-b9d9436186d99cd9"


def _old_validation_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The cut as bench/data.py wrote it before ``stratified_rows`` (also the loop's held-out cut)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = max(1, int(round(fraction * len(members)))) if len(members) > 1 else 0
        rows.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(rows))


def _old_multiview_test_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The test cut as datasets/multiview.py wrote it before ``stratified_rows``."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        rows.append(members[: int(round(fraction * len(members)))])
    return np.sort(np.concatenate(rows))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_rows_are_the_rows_of_the_three_former_copies(seed):
    rng = np.random.default_rng(100 + seed)
    labels = np.concatenate([rng.integers(0, 7, size=300), [7], [8, 8], [9, 9, 9]])  # tiny classes too
    rng.shuffle(labels)
    for fraction in (0.1, 0.2, 0.25):
        assert np.array_equal(stratified_rows(labels, fraction, seed), _old_validation_rows(labels, fraction, seed))
        assert np.array_equal(
            stratified_rows(labels, fraction, seed, at_least_one=False),
            _old_multiview_test_rows(labels, fraction, seed),
        )
    counts = label_counts(labels)
    assert carved_train_size(counts) == len(labels) - len(_old_validation_rows(labels, 0.2, 0))
