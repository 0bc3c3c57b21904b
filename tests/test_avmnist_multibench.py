"""MultiBench's AV-MNIST rebuilt (``avmnist_multibench``): the PCA rule, the spectrogram layout and rendering, the
pairing and the splits, on files written in the real layout, and on ../shared/data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from call_spies import count_calls
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from media_fixtures import tone, write_wav
from test_avmnist import _write_idx

import bench.datasets.avmnist_multibench as amb
from bench.loop import run_cell
from bench.media.cache import read_prepared
from bench.testing import tiny_spec

SPEAKERS = (*amb.MFAS_SPEAKERS, "george")  # george joined FSDD after the generator was written: left out by default
REPETITIONS = (0, 1, 39, 40, 49)  # 0-39 train pool, 40-49 test pool
TRAIN_IMAGES, TEST_IMAGES = 120, 40


def write_tiny_mnist_fsdd(root, speakers=SPEAKERS) -> dict[str, np.ndarray]:
    """MNIST IDX .gz files (random pixels, shuffled labels) and FSDD-named wavs (one tone per digit)."""
    rng = np.random.default_rng(0)
    labels = {}
    for split, n in (("train", TRAIN_IMAGES), ("t10k", TEST_IMAGES)):
        labels[split] = rng.permutation(np.tile(np.arange(10), n // 10))
        images = rng.integers(0, 256, size=(n, 28, 28))
        _write_idx(root / "mnist" / "raw" / f"{split}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(root / "mnist" / "raw" / f"{split}-labels-idx1-ubyte.gz", labels[split], 2049)
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for digit in range(10):
        for s, speaker in enumerate(speakers):
            for index in REPETITIONS:
                seconds = 0.25 + 0.01 * index  # lengths differ, so the window layouts differ
                write_wav(
                    recordings / f"{digit}_{speaker}_{index}.wav",
                    tone(300 + 250 * digit, seconds, 8000, seed=digit * 100 + s * 10 + index),
                    8000,
                )
    return labels


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    labels = write_tiny_mnist_fsdd(root)
    return root, labels


def _manifest(root) -> dict:
    return json.loads((amb.AVMNIST_MULTIBENCH.cache_path(root) / "manifest.json").read_text())


# -- the PCA step ------------------------------------------------------------------------------------------


def test_components_kept_is_the_first_index_above_the_energy():
    # cumulative 0.2, 0.4: the first value above 0.25 is at index 1, so 1 component (20%) is kept, not the 2
    # (40%) that would be the fewest components reaching 25%
    assert amb.components_kept([0.2, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05, 0.05]) == 1
    assert amb.components_kept([0.125] * 8) == 2  # 0.125, 0.25 (not above), 0.375
    assert amb.components_kept([0.25, 0.25, 0.25, 0.25]) == 1  # exactly 25% is kept
    assert amb.components_kept([0.5, 0.5]) == 0  # the first component alone holds more
    assert amb.components_kept([0.3, 0.7], energy=0.2) == 0


def test_pca_reconstruction_by_hand():
    # centred on (10, 10, 10): +-3 along x, +-2 along y, +-1 along z; variances 3, 4/3, 1/3 of 14/3 in all
    x = np.array([[13, 10, 10], [7, 10, 10], [10, 12, 10], [10, 8, 10], [10, 10, 11], [10, 10, 9]], dtype=np.uint8)
    expected_ratios = np.array([9, 4, 1]) / 14
    rec, notes = amb.pca_reconstruct(x, energy=0.7)  # cumulative 9/14 = 0.64, 13/14 = 0.93: one component
    assert notes["components"] == 1 and notes["variance_kept"] == pytest.approx(expected_ratios[0])
    np.testing.assert_allclose(rec, [[3, 0, 0], [-3, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]], atol=1e-9)
    rec, notes = amb.pca_reconstruct(x, energy=0.95)
    assert notes["components"] == 2 and notes["variance_kept"] == pytest.approx(13 / 14)
    np.testing.assert_allclose(rec, [[3, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 0], [0, 0, 0]], atol=1e-9)
    rec, notes = amb.pca_reconstruct(x)  # 25%: the first component alone holds 64%, nothing is kept
    assert notes["components"] == 0 and not rec.any()


def test_pca_reconstruction_agrees_with_scikit_learn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 256, size=(300, 40)) * np.linspace(0.2, 1.0, 40)).astype(np.uint8)  # unequal variances
    pca = decomposition.PCA(n_components=40).fit(x.astype(np.float64))
    k = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) > 0.25))
    reference = pca.transform(x.astype(np.float64))[:, :k] @ pca.components_[:k]
    rec, notes = amb.pca_reconstruct(x)
    assert notes["components"] == k > 1
    np.testing.assert_allclose(rec, reference, atol=1e-8)


# -- the spectrogram ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [112, 113, 500, 1120, 1121, 2400, 2411, 18240])
def test_segment_layout_gives_112_frames_with_the_smallest_window_then_overlap(length):
    def frames(window, overlap):
        return 1 + (length - window) // (window - overlap)  # matplotlib's count of windows

    window, overlap = amb.segment_layout(length)
    assert 0 <= overlap < window <= length and frames(window, overlap) == 112
    start = max(1, -(-length // 112) - 1)
    for smaller in range(start, window):
        assert all(frames(smaller, o) != 112 for o in range(smaller))
    assert all(frames(window, o) != 112 for o in range(overlap))


@pytest.mark.parametrize("seconds", [0.2, 0.44, 1.3])
def test_spectrogram_is_the_generators_figure_pixel_for_pixel(seconds):
    samples = tone(900, seconds, 8000, seed=3)
    window, overlap = amb.segment_layout(len(samples))
    figure = Figure(figsize=(1.12, 1.12), dpi=100)  # 112 x 112 pixels, the axes filling the figure
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots()
    figure.subplots_adjust(left=0, right=1, bottom=0, top=1)
    axes.axis("off")
    axes.specgram(samples, NFFT=window, pad_to=223, noverlap=overlap, Fs=8000, cmap="Greys")
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())[..., 0]
    image = amb.spectrogram_image(samples)
    assert image.shape == (112, 112) and image.dtype == np.uint8
    assert (image == drawn).all()
    assert image.min() == 0 and image.max() == 255  # scaled to its own range: loudest black, quietest white


# -- pairing, splits, cache --------------------------------------------------------------------------------


def test_pair_by_cycling_by_hand():
    labels = np.array([1, 0, 1, 1, 0, 1])
    clip_labels = np.array([0, 1, 1, 0])  # digit 0: clips 0, 3; digit 1: clips 1, 2
    assert amb.pair_by_cycling(labels, clip_labels).tolist() == [1, 0, 2, 1, 3, 2]
    with pytest.raises(ValueError, match="no clip of label 2"):
        amb.pair_by_cycling(np.array([2]), clip_labels)


def test_split_sizes_follow_the_protocol():
    assert amb.valid_size(60000) == 5000  # MultiBench: 55,000 / 5,000 of the MNIST training pairs
    assert amb.valid_size(TRAIN_IMAGES) == 10 and amb.valid_size(5) == 1


def test_shapes_splits_and_pairs(tiny):
    root, labels = tiny
    data = amb.AVMNIST_MULTIBENCH.load(root)
    assert [(m.name, m.shape, m.kind) for m in data.modalities] == [
        ("image", (1, 28, 28), "image"),
        ("audio", (1, 112, 112), "spectrogram"),
    ]
    assert (len(data.train), len(data.val), len(data.test)) == (110, 10, 40)
    # train and valid are the MNIST training file in order, split at its last 1/12; test is the test file
    assert data.train.labels.tolist() == labels["train"][:110].tolist()
    assert data.val.labels.tolist() == labels["train"][110:].tolist()
    assert data.test.labels.tolist() == labels["t10k"].tolist()
    for split in (data.train, data.val, data.test):
        audio, image = split.inputs["audio"], split.inputs["image"]
        assert audio.dtype == image.dtype == torch.float32
        assert float(audio.min()) >= 0.0 and float(audio.max()) <= 1.0
        grey = audio.numpy() * 255.0
        np.testing.assert_allclose(grey, np.round(grey), atol=1e-3)  # grey levels / 255
        assert float(image.min()) < 0.0 < float(image.max())  # centred reconstructions / 255

    manifest = _manifest(root)
    clips = manifest["clips"]
    assert len(clips["train"]) == 10 * 4 * 3 and len(clips["test"]) == 10 * 4 * 2  # four speakers, no george
    assert not any("george" in name for pool in clips.values() for name in pool)
    assert all(int(name.rsplit("_", 1)[1][:-4]) >= 40 for name in clips["test"])
    assert all(int(name.rsplit("_", 1)[1][:-4]) < 40 for name in clips["train"])
    assert manifest["split_sizes"] == {"train": 110, "val": 10, "test": 40}
    arrays = read_prepared(amb.AVMNIST_MULTIBENCH.cache_path(root))
    for split, pool in manifest["audio_pool"].items():
        names = clips[pool]
        digits = np.array([int(name[0]) for name in names])
        picks = arrays[f"{split}_clip"]
        assert (digits[picks] == arrays[f"{split}_label"]).all()  # every pair is one digit
    # the n-th training image of digit d (train and valid together) gets digit d's clip n mod 12, in name order
    picks = np.concatenate([arrays["train_clip"], arrays["val_clip"]])
    for digit in range(10):
        pool = [i for i, name in enumerate(clips["train"]) if int(name[0]) == digit]
        rows = np.flatnonzero(labels["train"] == digit)
        assert picks[rows].tolist() == [pool[n % len(pool)] for n in range(len(rows))]
        assert clips["train"][pool[0]] == f"{digit}_jackson_0.wav"
    # a pair's spectrogram is that clip's picture
    row = 7
    wav = root / "fsdd" / "recordings" / clips["train"][arrays["train_clip"][row]]
    expected = amb.spectrogram_image(amb.read_wav(wav)).astype(np.float32) / 255.0
    assert (data.train.inputs["audio"][row, 0].numpy() == expected).all()


def test_pairs_are_deterministic_across_builds(tiny, tmp_path, monkeypatch):
    root, _ = tiny
    first = amb.AVMNIST_MULTIBENCH.load(root)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "another-cache"))
    second = amb.AVMNISTMultiBench().load(root)
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(second, name)
        assert (a.labels == b.labels).all()
        for modality in ("image", "audio"):
            assert torch.equal(a.inputs[modality], b.inputs[modality])


def test_second_load_reads_the_cache_without_decoding(tiny, monkeypatch):
    root, _ = tiny
    calls = count_calls(monkeypatch, amb, "read_wav")
    assert amb.AVMNIST_MULTIBENCH.status(root)[0] == "raw found"
    amb.AVMNIST_MULTIBENCH.load(root)
    assert calls[0] == 10 * 4 * len(REPETITIONS)  # every pool clip once, george's never
    state, detail = amb.AVMNIST_MULTIBENCH.status(root)
    assert state == "prepared" and "(110 train / 10 valid / 40 test pairs)" in detail
    amb.AVMNIST_MULTIBENCH.load(root)
    assert calls[0] == 10 * 4 * len(REPETITIONS)


def test_other_speakers_get_their_own_cache(tiny):
    root, _ = tiny
    six = dataclasses.replace(amb.AVMNIST_MULTIBENCH, speakers=SPEAKERS)
    assert six.cache_path(root) != amb.AVMNIST_MULTIBENCH.cache_path(root)
    six.load(root)
    manifest = json.loads((six.cache_path(root) / "manifest.json").read_text())
    assert len(manifest["clips"]["train"]) == 10 * 5 * 3


def test_missing_speakers_say_what_is_missing(tmp_path):
    root = tmp_path / "data"
    write_tiny_mnist_fsdd(root, speakers=("george",))
    ok, why = amb.AVMNIST_MULTIBENCH.available(root)
    assert not ok and "no recording of digit 0" in why and "jackson" in why and "\n" not in why
    ok, why = amb.AVMNIST_MULTIBENCH.available(None)
    assert not ok and "no data root" in why


def test_trains_one_epoch_on_the_shipped_validation_split(tiny):
    root, _ = tiny
    spec = dataclasses.replace(tiny_spec("late_fusion"), dataset="avmnist_multibench", epochs=1)
    result = run_cell(spec, data_root=root)
    assert result["notes"]["validation"] == "shipped with the dataset"
    assert result["notes"]["split_sizes"] == {"train": 110, "val": 10, "test": 40}
    assert result["metrics"]["num_test_samples"] == 40
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0


def test_bench_data_prepares_it(run_cli, tiny):
    root, _ = tiny
    code, out, _ = run_cli("data", "--data-root", str(root))
    assert code == 0 and "avmnist_multibench: raw found: not prepared yet" in out
    code, out, _ = run_cli("data", "prepare", "avmnist_multibench", "--data-root", str(root))
    assert code == 0 and "avmnist_multibench: prepared in" in out
    code, out, _ = run_cli("data", "--data-root", str(root))
    assert "avmnist_multibench: prepared: cache" in out and "(110 train / 10 valid / 40 test pairs)" in out


def test_real_data_matches_multibench_sizes(data_root):
    """On ../shared/data (prepared into the default cache, which the conformance suite shares)."""
    data = amb.AVMNIST_MULTIBENCH.load(data_root)
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert tuple(data.train.inputs["audio"].shape[1:]) == (1, 112, 112)
    manifest = _manifest(data_root)
    assert manifest["pca"]["train"]["components"] == manifest["pca"]["test"]["components"] == 3
    assert {pool: len(names) for pool, names in manifest["clips"].items()} == {"train": 1600, "test": 400}
    arrays = read_prepared(amb.AVMNIST_MULTIBENCH.cache_path(data_root))
    for split, pool in manifest["audio_pool"].items():
        digits = np.array([int(name[0]) for name in manifest["clips"][pool]])
        assert (digits[arrays[f"{split}_clip"]] == arrays[f"{split}_label"]).all()
