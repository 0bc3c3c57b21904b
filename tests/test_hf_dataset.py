"""--datasets hf:<folder>: local Hugging Face datasets (save_to_disk folders and parquet files), nothing fetched."""

from __future__ import annotations

import io
import json
import wave

import numpy as np
import pytest
import torch
from cli_helpers import grid_args, read_records

datasets = pytest.importorskip("datasets")

from bench.data import cell_data  # noqa: E402
from bench.datasets.hf import resolve  # noqa: E402
from bench.registry import DATASETS  # noqa: E402
from bench.spec import CellSpec  # noqa: E402

FEATURES = {
    "a": datasets.List(datasets.Value("float32")),
    "b": datasets.List(datasets.Value("float32")),
    "label": datasets.ClassLabel(names=["x", "y", "z"]),
}


def _split(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return {
        "a": (np.eye(3)[y] * 2 + rng.normal(size=(n, 3))).astype("float32").tolist(),
        "b": (rng.normal(size=(n, 4)) + y[:, None]).astype("float32").tolist(),
        "label": y.tolist(),
    }


def _dict(**splits: dict):
    features = datasets.Features(FEATURES)
    return datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(rows, features=features) for name, rows in splits.items()}
    )


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # hf:<folder> names are relative to the working directory
    datasets.disable_progress_bars()  # save_to_disk would draw bars on the stderr the tests read
    yield tmp_path
    datasets.enable_progress_bars()
    for name in [n for n in DATASETS.names() if n.startswith("hf:")]:
        DATASETS.unregister(name)
    from bench import data

    for key in [k for k in data._cache if k[0].startswith("hf:")]:  # the next test's folder of the same name
        del data._cache[key]


def _spec(name: str, rate: float = 0.0) -> CellSpec:
    adapter = DATASETS.get(name)
    return CellSpec(
        method="late_fusion",
        hparams={},
        dataset=name,
        dataset_version=adapter.info.version,
        seed=0,
        missing_rate=rate,
        epochs=1,
        batch_size=16,
    )


def test_save_to_disk_folder_loads_its_arrays_and_carves_validation(cwd):
    train, test = _split(60, 0), _split(20, 1)
    _dict(train=train, test=test).save_to_disk("tiny")
    adapter = DATASETS.get("hf:tiny")
    assert adapter.info.modalities == ("a", "b") and adapter.info.num_classes == 3
    loaded = adapter.load(None)
    assert [(m.name, m.shape, m.kind) for m in loaded.modalities] == [("a", (3,), "vector"), ("b", (4,), "vector")]
    assert torch.equal(loaded.train.inputs["b"], torch.tensor(train["b"]))
    assert loaded.test.labels.tolist() == test["label"] and loaded.val is None
    data = cell_data(_spec("hf:tiny"), data_root=None, zero_fill=True, device=torch.device("cpu"))
    assert data.notes["validation"].startswith("carved from train")
    assert data.notes["split_sizes"] == {"train": 48, "val": 12, "test": 20}
    # stratified: every class of train is in the carved validation split
    assert set(data.val.labels.tolist()) == set(train["label"])


def test_parquet_folder_gives_the_same_tensors_and_keeps_its_validation(cwd):
    train, val, test = _split(60, 0), _split(15, 2), _split(20, 1)
    both = _dict(train=train, validation=val, test=test)
    both.save_to_disk("disk")
    (cwd / "pq").mkdir()
    for name, split in both.items():
        split.to_parquet(f"pq/{name}.parquet")
    disk, pq = DATASETS.get("hf:disk").load(None), DATASETS.get("hf:pq").load(None)
    assert pq.val is not None and torch.equal(pq.val.inputs["a"], torch.tensor(val["a"]))
    for split in ("train", "val", "test"):
        for name in ("a", "b"):
            assert torch.equal(getattr(disk, split).inputs[name], getattr(pq, split).inputs[name])
        assert torch.equal(getattr(disk, split).labels, getattr(pq, split).labels)
    data = cell_data(_spec("hf:pq"), data_root=None, zero_fill=True, device=torch.device("cpu"))
    assert data.notes["validation"] == "shipped with the dataset"


def test_a_run_on_an_hf_folder_writes_records(cwd, run_cli):
    _dict(train=_split(60, 0), test=_split(20, 1)).save_to_disk("tiny")
    code, out, err = run_cli("run", *grid_args(datasets="hf:tiny", missing_rates="0,0.5"), "--results", "res")
    assert code == 0, err
    records = read_records(cwd / "res")
    assert len(records) == 2 and {r["spec"]["dataset"] for r in records} == {"hf:tiny"}
    assert all(r["status"] == "ok" and r["metrics"]["num_test_samples"] == 20 for r in records)


def test_the_version_follows_the_folder_content(cwd):
    _dict(train=_split(60, 0), test=_split(20, 1)).save_to_disk("one")
    _dict(train=_split(60, 0), test=_split(20, 1)).save_to_disk("same")
    _dict(train=_split(60, 5), test=_split(20, 1)).save_to_disk("other")
    versions = {name: resolve(name).info.version for name in ("one", "same", "other")}
    assert versions["one"] == versions["same"] != versions["other"]


def test_a_card_chooses_label_and_modalities(cwd):
    rows = {
        "f1": [0.0, 1.0, 2.0, 3.0],
        "f2": [5.0, 6.0, 7.0, 8.0],
        "vec": [[1.0, 2.0]] * 4,
        "kind": ["b", "a", "b", "a"],
    }
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "test": datasets.Dataset.from_dict(rows)}
    ).save_to_disk("carded")
    (cwd / "carded" / "bench.json").write_text(
        json.dumps({"label": "kind", "modalities": {"stats": ["f1", "f2"], "v": "vec"}})
    )
    loaded = DATASETS.get("hf:carded").load(None)
    assert [m.name for m in loaded.modalities] == ["stats", "v"]
    assert loaded.train.inputs["stats"].tolist() == [[0, 5], [1, 6], [2, 7], [3, 8]]
    assert loaded.train.labels.tolist() == [1, 0, 1, 0]  # classes in sorted order of the training labels


def test_feature_sequences_are_zero_padded_to_the_longest(cwd):
    rows = {"seq": [[[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0]]], "label": [0, 1, 0]}
    features = datasets.Features(
        {"seq": datasets.List(datasets.List(datasets.Value("float32"))), "label": datasets.ClassLabel(names=["a", "b"])}
    )
    split = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": split, "test": split.select([0])}).save_to_disk("seqs")
    loaded = DATASETS.get("hf:seqs").load(None)
    assert [(m.name, m.shape, m.kind) for m in loaded.modalities] == [("seq", (2, 2), "vector")]
    assert loaded.train.inputs["seq"].tolist() == [[[1, 2], [0, 0]], [[3, 4], [5, 6]], [[7, 8], [0, 0]]]
    assert loaded.test.inputs["seq"].shape == (1, 2, 2)


def _wav(freq: float, rate: int = 8000, n: int = 4000) -> bytes:
    samples = (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return buffer.getvalue()


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def test_image_audio_and_text_columns(cwd):
    from bench.datasets._jsonl_image_text import load_text_tokenizer
    from bench.media.decode import kaldi_fbank, pad_or_cut

    try:
        tokenizer = load_text_tokenizer(None)
    except Exception as exc:  # noqa: BLE001 - the text extra is not installed
        pytest.skip(f"the shipped text tokenizer is not available: {exc}")
    features = datasets.Features(
        {"img": datasets.Image(), "txt": datasets.Value("string"), "label": datasets.ClassLabel(names=["lo", "hi"])}
    )
    split = datasets.Dataset.from_dict(
        {
            "img": [{"bytes": _png(10), "path": None}, {"bytes": _png(200), "path": None}],
            "txt": ["a cat", "a dog"],
            "label": [0, 1],
        },
        features=features,
    )
    sounds = [_wav(200.0), _wav(900.0)]
    split = split.add_column("snd", [{"bytes": b, "path": None} for b in sounds]).cast_column("snd", datasets.Audio())
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk("media")
    (cwd / "media" / "bench.json").write_text(
        json.dumps({"image_size": 8, "max_tokens": 6, "audio_frames": 40, "n_mels": 23})
    )
    loaded = DATASETS.get("hf:media").load(None)
    specs = {m.name: (m.shape, m.kind) for m in loaded.modalities}
    assert specs == {"img": ((1, 8, 8), "image"), "txt": ((2, 6), "tokens"), "snd": ((1, 40, 23), "spectrogram")}
    assert loaded.train.inputs["img"][:, 0, 3, 3].tolist() == pytest.approx([10 / 255, 200 / 255])
    ids = tokenizer(["a cat"], padding="max_length", max_length=6)["input_ids"][0]
    assert loaded.train.inputs["txt"][0, 0].tolist() == ids
    wave_ = np.frombuffer(sounds[1][44:], dtype="<i2").astype(np.float32) / 32768.0
    expected = pad_or_cut(kaldi_fbank(wave_, 8000, num_mel_bins=23, window="hanning"), 40)
    assert np.allclose(loaded.train.inputs["snd"][1, 0].numpy(), expected)


@pytest.mark.parametrize(
    "setup, selection, fragment",
    [
        (None, "hf:nowhere", "folder nowhere not found"),
        ("nolabel", "hf:nolabel", "no ClassLabel column"),
        (None, "hf:../up", "without '..'"),
        ("empty", "hf:empty", "neither a save_to_disk DatasetDict"),
    ],
)
def test_bad_folders_are_one_line(cwd, run_cli, setup, selection, fragment):
    if setup == "nolabel":
        rows = {"v": [[1.0], [2.0]], "y": [0, 1]}
        datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict(rows), "test": datasets.Dataset.from_dict(rows)}
        ).save_to_disk(setup)
    elif setup:
        (cwd / setup).mkdir()
    code, _, err = run_cli("validate", "--methods", "late_fusion", "--datasets", selection)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
