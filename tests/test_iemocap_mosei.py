"""IEMOCAP (MLA's preprocessed layout: lists, fbank .npy, face JPEGs, token .npy) and CMU-MOSEI (MultiBench's
feature pickle) adapters on tiny datasets written in those real on-disk layouts."""

from __future__ import annotations

import dataclasses
import decimal
import json
import os
import pickle

import numpy as np
import pytest
import torch
from call_spies import interrupt_at_call
from PIL import Image

from bench.datasets.iemocap import CLASSES, IEMOCAP, SEPARATOR
from bench.datasets.mosei import MOSEI, read_feature_pickle
from bench.errors import UsageError
from bench.loop import run_cell
from bench.media.cache import read_manifest
from bench.nn.backbones import load_tokenizer
from bench.registry import DATASETS
from bench.testing import tiny_spec

PER_CLASS = {"train": 4, "test": 2}
FBANK = (64, 128)  # MLA's are (1024, 128); any consistent (frames, bins) is read
TOKENS = 24  # MLA pads to 256
LIST_LABELS = ("Neutral", "Angry", "Sad", "Happy")  # stat_iemo.txt's order; the adapter sorts, as MLA


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def registered():
    names = []

    def register(adapter, name, **options):
        variant = dataclasses.replace(adapter, info=dataclasses.replace(adapter.info, name=name), **options)
        DATASETS.register(name, variant, origin="tests")
        names.append(name)

    yield register
    for name in names:
        DATASETS.unregister(name)


# --------------------------------------------------------------------------------------------------
# IEMOCAP


def write_mla_iemocap(root) -> dict[str, list[tuple[str, str, str]]]:
    """MLA's lists and preprocessed files: per utterance an fbank, three face JPEGs (names out of order on
    purpose: the middle one after sorting is the brightest), token ids of the transcript from the BERT-vocabulary
    tokenizer without special tokens and a float padding mask (1.0 = pad), as data/preprocess_iemo.py writes."""
    tokenizer = load_tokenizer()
    rng = np.random.default_rng(0)
    folder = root / "iemocap"
    written: dict[str, list[tuple[str, str, str]]] = {}
    for split, per_class in PER_CLASS.items():
        lines, written[split] = [], []
        for n in range(per_class):
            for c, label in enumerate(LIST_LABELS):
                utt = f"Ses0{n % 5 + 1}F_script0{c}_{split}_F{n:03d}"
                transcript = f"i feel {label.lower()} about take {n}"
                lines.append(f"{utt}.mp4{SEPARATOR}{transcript}{SEPARATOR}{label}")
                written[split].append((utt, label, transcript))
                audio = folder / "audio" / f"{split}_fbank" / f"{utt}.npy"
                audio.parent.mkdir(parents=True, exist_ok=True)
                np.save(audio, (rng.standard_normal(FBANK) + c).astype(np.float32))
                faces = folder / "visual" / f"{split}_imgs" / utt
                faces.mkdir(parents=True)
                for name, level in (("frame_c.jpg", 60), ("frame_a.jpg", 10), ("frame_b.jpg", 200)):
                    pixels = np.full((40, 40, 3), level, dtype=np.uint8)
                    Image.fromarray(pixels).save(faces / name, format="JPEG", quality=95)
                enc = tokenizer(
                    transcript,
                    padding="max_length",
                    truncation=True,
                    max_length=TOKENS,
                    add_special_tokens=False,
                    return_tensors="np",
                )
                tokens = folder / "text_token" / f"{split}_token"
                tokens.mkdir(parents=True, exist_ok=True)
                np.save(tokens / f"{utt}_token.npy", enc["input_ids"].astype(np.int64))
                np.save(tokens / f"{utt}_pm.npy", 1.0 - enc["attention_mask"].astype(np.float32))
        (folder / f"my_{split}_iemo.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


@pytest.fixture
def iemocap_root(tmp_path, cache):
    root = tmp_path / "data"
    write_mla_iemocap(root)
    return root


SMALL_IEMOCAP = {"image_size": 32}


def test_iemocap_trains_one_epoch_end_to_end(iemocap_root, registered):
    registered(IEMOCAP, "_tiny_iemocap", **SMALL_IEMOCAP)
    spec = dataclasses.replace(tiny_spec("late_fusion"), dataset="_tiny_iemocap", epochs=1, missing_rate=0.3)
    result = run_cell(spec, data_root=iemocap_root)
    sizes = result["notes"]["split_sizes"]
    assert result["notes"]["validation"].startswith("carved from train")
    assert sizes["train"] + sizes["val"] == 4 * PER_CLASS["train"] and sizes["test"] == 4 * PER_CLASS["test"]
    assert set(result["metrics"]["per_modality_accuracy"]) == {"audio", "visual", "text"}


def test_iemocap_modalities_labels_middle_image_and_tokens(iemocap_root):
    data = dataclasses.replace(IEMOCAP, **SMALL_IEMOCAP).load(iemocap_root)
    assert [(m.name, m.shape, m.kind) for m in data.modalities] == [
        ("audio", (1, *FBANK), "spectrogram_resnet18"),
        ("visual", (3, 32, 32), "frames_resnet18"),
        ("text", (2, TOKENS), "tokens"),
    ]
    assert data.val is None
    lines = (iemocap_root / "iemocap" / "my_train_iemo.txt").read_text(encoding="utf-8").splitlines()
    first_utt, _, first_label = lines[0].split(SEPARATOR)
    assert sorted(LIST_LABELS) == list(CLASSES)
    assert data.train.labels.tolist() == [sorted(LIST_LABELS).index(line.split(SEPARATOR)[-1]) for line in lines]
    utt = first_utt.removesuffix(".mp4")
    fbank = np.load(iemocap_root / "iemocap" / "audio" / "train_fbank" / f"{utt}.npy")
    assert torch.equal(data.train.inputs["audio"][0, 0], torch.from_numpy(fbank))
    # sorted names frame_a (10), frame_b (200), frame_c (60): the middle is frame_b, the brightest
    assert abs(float(data.train.inputs["visual"][0].float().mean()) - 200) < 3
    ids = np.load(iemocap_root / "iemocap" / "text_token" / "train_token" / f"{utt}_token.npy")[0]
    padding = np.load(iemocap_root / "iemocap" / "text_token" / "train_token" / f"{utt}_pm.npy")[0]
    assert data.train.inputs["text"][0, 0].tolist() == ids.tolist()
    assert data.train.inputs["text"][0, 1].tolist() == (1 - padding).astype(int).tolist()


def test_iemocap_missing_file_names_it_or_is_skipped_as_mla(iemocap_root):
    utt = (iemocap_root / "iemocap" / "my_test_iemo.txt").read_text(encoding="utf-8").split(".mp4")[0]
    victim = iemocap_root / "iemocap" / "text_token" / "test_token" / f"{utt}_pm.npy"
    victim.unlink()
    with pytest.raises(UsageError) as err:
        IEMOCAP.load(iemocap_root)
    assert str(victim) in str(err.value) and "my_test_iemo.txt" in str(err.value) and "\n" not in str(err.value)
    lenient = dataclasses.replace(IEMOCAP, skip_missing=True, **SMALL_IEMOCAP)
    data = lenient.load(iemocap_root)
    assert len(data.test) == 4 * PER_CLASS["test"] - 1
    assert read_manifest(lenient.cache_path(iemocap_root))["skipped_missing"] == {"test": [utt]}


def test_iemocap_damaged_fbank_and_unknown_label_are_one_line(iemocap_root):
    listing = iemocap_root / "iemocap" / "my_train_iemo.txt"
    utt = listing.read_text(encoding="utf-8").split(".mp4")[0]
    victim = iemocap_root / "iemocap" / "audio" / "train_fbank" / f"{utt}.npy"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(UsageError) as err:
        IEMOCAP.load(iemocap_root)
    assert str(victim) in str(err.value) and "\n" not in str(err.value)
    listing.write_text(listing.read_text(encoding="utf-8").replace("Angry", "Excited", 1), encoding="utf-8")
    with pytest.raises(UsageError, match="line 2 has label 'Excited'"):
        IEMOCAP.load(iemocap_root)


def test_iemocap_token_ids_beyond_the_text_models_vocabulary_are_refused(iemocap_root, tmp_path):
    model = tmp_path / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 1000}), encoding="utf-8")
    with pytest.raises(UsageError, match="beyond the 1000-entry vocabulary"):
        dataclasses.replace(IEMOCAP, text_model=str(model), **SMALL_IEMOCAP).load(iemocap_root)
    kinds = {m.name: m.kind for m in dataclasses.replace(IEMOCAP, **SMALL_IEMOCAP).load(iemocap_root).modalities}
    assert kinds["text"] == "tokens"
    assert dataclasses.replace(IEMOCAP, text_model=str(model))._kinds()["text"] == f"tokens:{model}"


def test_iemocap_interrupted_preparation_leaves_no_cache(iemocap_root, cache, monkeypatch):
    import bench.datasets.iemocap as iemocap

    interrupt_at_call(monkeypatch, iemocap, "read_rgb", 9)  # half-way through decoding
    with pytest.raises(KeyboardInterrupt):
        IEMOCAP.load(iemocap_root)
    assert list((cache / "iemocap").iterdir()) == []
    assert IEMOCAP.status(iemocap_root)[0] == "raw found"


def test_iemocap_absent_says_which_file(tmp_path, cache):
    ok, why = IEMOCAP.available(tmp_path)
    assert not ok and str(tmp_path / "iemocap" / "my_train_iemo.txt") in why and "sail.usc.edu" in why


# --------------------------------------------------------------------------------------------------
# CMU-MOSEI


MOSEI_SIZES = {"train": 40, "valid": 12, "test": 12}
SHAPES = {"vision": (50, 35), "audio": (50, 74), "text": (50, 300)}


def write_multibench_pickle(path, *, protocol=pickle.HIGHEST_PROTOCOL) -> dict:
    """MultiBench's structure with the quirks its loader handles: -inf in audio, a sample without text, a score of
    exactly 0, and one NaN in vision. Returns the raw data (before any cleaning)."""
    rng = np.random.default_rng(1)
    data = {}
    for key, n in MOSEI_SIZES.items():
        scores = rng.uniform(-3, 3, size=n).round(1)
        scores[0] = 0.0
        split = {
            m: (rng.standard_normal((n, *shape)) + scores[:, None, None]).astype(np.float32)
            for m, shape in SHAPES.items()
        }
        split["text"][:, :10] = 0.0  # left padding, as the aligned file has
        split["text"][1] = 0.0  # no text at all: MultiBench's drop_entry removes it
        split["audio"][2, 3, :5] = -np.inf
        split["vision"][3, 0, 0] = np.nan
        split["labels"] = scores.reshape(n, 1, 1).astype(np.float32)
        split["id"] = np.array([[f"vid{i}".encode(), b"0", b"1"] for i in range(n)])
        data[key] = split
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=protocol)
    return data


@pytest.fixture
def mosei_root(tmp_path, cache):
    root = tmp_path / "data"
    write_multibench_pickle(root / "mosei" / "mosei_senti_data.pkl")
    return root


def test_mosei_trains_one_epoch_end_to_end(mosei_root, registered):
    registered(MOSEI, "_tiny_mosei")
    spec = dataclasses.replace(tiny_spec("late_fusion"), dataset="_tiny_mosei", epochs=1)
    result = run_cell(spec, data_root=mosei_root)
    assert result["notes"]["validation"] == "shipped with the dataset"
    assert result["notes"]["split_sizes"] == {"train": 39, "val": 11, "test": 11}  # one empty-text sample dropped


@pytest.mark.parametrize("zero_is_positive", [False, True])
def test_mosei_labels_cleaning_and_dropping(tmp_path, cache, zero_is_positive):
    raw = write_multibench_pickle(tmp_path / "data" / "mosei" / "mosei_senti_data.pkl", protocol=2)
    adapter = dataclasses.replace(MOSEI, zero_is_positive=zero_is_positive)
    data = adapter.load(tmp_path / "data")
    assert [(m.name, m.shape, m.kind) for m in data.modalities] == [(m, s, "vector") for m, s in SHAPES.items()]
    keep = np.ones(MOSEI_SIZES["train"], dtype=bool)
    keep[1] = False
    scores = raw["train"]["labels"].reshape(-1)[keep]
    expected = [int(s >= 0) if zero_is_positive else int(s > 0) for s in scores]
    assert data.train.labels.tolist() == expected and data.train.labels[0] == int(zero_is_positive)
    audio = raw["train"]["audio"][keep].copy()
    audio[np.isneginf(audio)] = 0.0
    assert np.array_equal(data.train.inputs["audio"].numpy(), audio)
    assert float(data.train.inputs["vision"][2, 0, 0]) == 0.0  # sample 3 before the drop: its NaN set to 0
    assert np.array_equal(data.train.inputs["text"].numpy(), raw["train"]["text"][keep])
    manifest = read_manifest(adapter.cache_path(tmp_path / "data"))
    assert manifest["dropped_empty_text"] == {"train": 1, "val": 1, "test": 1}
    assert manifest["audio_neg_inf_set_to_zero"]["train"] == 5
    assert manifest["nonfinite_set_to_zero"]["train"] == {"vision": 1}
    kept_all = dataclasses.replace(adapter, drop_empty_text=False).load(tmp_path / "data")
    assert len(kept_all.train) == MOSEI_SIZES["train"]


def test_mosei_pickle_asking_for_code_is_not_unpickled(tmp_path, cache):
    marker = tmp_path / "ran"
    evil = tmp_path / "data" / "mosei" / "mosei_senti_data.pkl"
    evil.parent.mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    evil.write_bytes(pickle.dumps({"train": Payload()}))
    with pytest.raises(UsageError, match="asks to load posix.mkdir|asks to load os.mkdir") as err:
        MOSEI.load(tmp_path / "data")
    assert not marker.exists() and str(evil) in str(err.value) and "trust_pickle=True" in str(err.value)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"value": decimal.Decimal("1.5")}))
    with pytest.raises(UsageError):
        read_feature_pickle(other)
    assert read_feature_pickle(other, trust=True) == {"value": decimal.Decimal("1.5")}


def test_mosei_damaged_or_wrong_pickle_is_one_line(mosei_root):
    path = mosei_root / "mosei" / "mosei_senti_data.pkl"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UsageError, match="damaged or truncated") as err:
        MOSEI.load(mosei_root)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(pickle.dumps({"train": {}, "test": {}}))
    with pytest.raises(UsageError, match="has no 'valid' split|lacks"):
        MOSEI.load(mosei_root)


def test_mosei_absent_and_status(tmp_path, cache, mosei_root):
    ok, why = MOSEI.available(tmp_path)
    assert not ok and str(tmp_path / "mosei" / "mosei_senti_data.pkl") in why and "MultiBench" in why
    assert MOSEI.status(mosei_root)[0] == "raw found"
    MOSEI.prepare(mosei_root)
    state, detail = MOSEI.status(mosei_root)
    assert state == "prepared" and "(39 train / 11 val / 11 test)" in detail
