"""Food-101 and MVSA-Single adapters on tiny datasets written in QMF's real layout: jsonl files and JPEGs encoded by
PIL. Checked against independent computations: torchvision's transforms, the transformers tokenizer."""

from __future__ import annotations

import dataclasses
import json
import socket

import numpy as np
import pytest
import torch
from call_spies import count_calls, interrupt_at_call
from PIL import Image

import bench.datasets._jsonl_image_text as helper
from bench.datasets.food101 import FOOD101
from bench.datasets.mvsa import MVSA
from bench.errors import UsageError
from bench.loop import run_cell
from bench.media.cache import read_manifest
from bench.nn.backbones import load_tokenizer, normalise_uint8_frames
from bench.registry import DATASETS
from bench.testing import tiny_spec

MVSA_ORDER = ("positive", "negative", "neutral")  # first appearance in train.jsonl; sorted differs
SIZES = {"train": 2, "dev": 1, "test": 1}  # rows per class and split (MVSA)
FOOD_SIZES = {"train": 1, "dev": 1, "test": 1}  # 101 classes: one row each keeps the test fast


def _write_jpeg(path, colour, size, seed) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG", quality=90)


def write_qmf_layout(root, folder, classes, image_path, sizes=SIZES) -> None:
    """``<folder>/{train,dev,test}.jsonl`` with QMF's rows and one real JPEG per row (a colour per class,
    landscape and portrait sizes). Rows are interleaved by class, so first appearance follows ``classes``."""
    serial = 0
    for split, per_class in sizes.items():
        rows = []
        for _ in range(per_class):
            for c, label in enumerate(classes):
                serial += 1
                img = image_path(split, label, serial)
                size = (40, 30) if serial % 2 else (30, 44)
                _write_jpeg(root / folder / img, (40 + 2 * c, 200 - c, 90 + c % 7 * 20), size, serial)
                text = f"a {label.replace('_', ' ')} post number {serial}"
                rows.append({"id": str(serial), "label": label, "text": text, "img": img})
        with open(root / folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)


def _food_image(split, label, serial):
    return f"images/{'test' if split == 'test' else 'train'}/{label}/{label}_{serial}.jpg"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def mvsa_root(tmp_path, cache):
    root = tmp_path / "data"
    write_qmf_layout(root, "MVSA_Single", MVSA_ORDER, lambda split, label, serial: f"data/{serial}.jpg")
    return root


@pytest.fixture
def food_root(tmp_path, cache):
    root = tmp_path / "data"
    write_qmf_layout(root, "food101", [f"dish_{i:03d}" for i in range(101)], _food_image, FOOD_SIZES)
    return root


SMALL = {"resize": 36, "image_size": 32, "max_tokens": 16}


@pytest.fixture
def registered():
    """Register a small-image variant of an adapter under a test name; unregistered afterwards."""
    names = []

    def register(adapter, name, **options):
        variant = dataclasses.replace(
            adapter, info=dataclasses.replace(adapter.info, name=name), **{**SMALL, **options}
        )
        DATASETS.register(name, variant, origin="tests")
        names.append(name)
        return variant

    yield register
    for name in names:
        DATASETS.unregister(name)


@pytest.mark.parametrize("which", ["food101", "mvsa"])
def test_trains_one_epoch_end_to_end(which, request, registered):
    adapter, classes, sizes = (FOOD101, 101, FOOD_SIZES) if which == "food101" else (MVSA, 3, SIZES)
    root = request.getfixturevalue("food_root" if which == "food101" else "mvsa_root")
    name = f"_tiny_{which}"
    registered(adapter, name, max_tokens=8)  # the tiny texts are 7 or 8 tokens long
    spec = dataclasses.replace(tiny_spec("late_fusion"), dataset=name, epochs=1, batch_size=64)
    result = run_cell(spec, data_root=root)
    assert result["notes"]["validation"] == "shipped with the dataset"
    assert result["notes"]["split_sizes"] == {
        s: classes * sizes[f] for s, f in (("train", "train"), ("val", "dev"), ("test", "test"))
    }
    assert result["metrics"]["num_test_samples"] == classes
    assert set(result["metrics"]["per_modality_accuracy"]) == {"image", "text"}


def test_shapes_kinds_and_dtypes(mvsa_root):
    data = MVSA.load(mvsa_root)
    assert [(m.name, m.shape, m.kind) for m in data.modalities] == [
        ("image", (3, 224, 224), "frames_resnet18"),
        ("text", (2, 128), "tokens"),
    ]
    assert data.train.inputs["image"].dtype == torch.uint8 and data.train.inputs["text"].dtype == torch.int64
    assert [len(s) for s in (data.train, data.val, data.test)] == [6, 3, 3]
    assert (FOOD101.resize, FOOD101.image_size) == (128, 112)  # QMF's transform at half its size


def test_images_match_torchvision_resize_and_centre_crop(mvsa_root):
    from torchvision import transforms

    rows = helper.read_jsonl(mvsa_root / "MVSA_Single" / "train.jsonl")
    reference = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32)])
    for row in rows[:2]:  # one landscape, one portrait image
        path = mvsa_root / "MVSA_Single" / row["img"]
        expected = np.asarray(reference(Image.open(path).convert("RGB"))).transpose(2, 0, 1)
        assert np.array_equal(helper.read_rgb(path, 36, 32), expected)
    small = dataclasses.replace(MVSA, **SMALL).load(mvsa_root)
    first = mvsa_root / "MVSA_Single" / rows[0]["img"]
    assert np.array_equal(small.train.inputs["image"][0].numpy(), helper.read_rgb(first, 36, 32))


def test_uint8_frames_are_normalised_like_torchvision_and_missing_stays_zero():
    from torchvision import transforms

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    pixels[1] = 0  # a zero-filled (missing) sample
    batch = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())  # (B, 3, H, W)
    out = normalise_uint8_frames(batch.unsqueeze(2))  # (B, 3, 1, H, W)
    reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    assert torch.allclose(out[0, :, 0], reference(Image.fromarray(pixels[0])), atol=1e-6)
    assert out[1].abs().sum() == 0


def test_class_order_first_seen_as_qmf_or_sorted_as_mla(mvsa_root):
    rows = helper.read_jsonl(mvsa_root / "MVSA_Single" / "train.jsonl")
    truth = [r["label"] for r in rows]
    first_seen = MVSA.load(mvsa_root)
    assert [MVSA_ORDER[i] for i in first_seen.train.labels.tolist()] == truth
    alphabetical = dataclasses.replace(MVSA, class_order="sorted")
    names = sorted(MVSA_ORDER)
    assert [names[i] for i in alphabetical.load(mvsa_root).train.labels.tolist()] == truth
    assert read_manifest(alphabetical.cache_path(mvsa_root))["classes"] == names
    assert read_manifest(MVSA.cache_path(mvsa_root))["classes"] == list(MVSA_ORDER)


def test_tokens_are_the_tokenizers_ids_and_mask_and_cuts_are_counted(mvsa_root):
    path = mvsa_root / "MVSA_Single" / "test.jsonl"
    rows = helper.read_jsonl(path)
    rows[0]["text"] = "a very long tweet " * 10
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    adapter = dataclasses.replace(MVSA, **SMALL)
    data = adapter.load(mvsa_root)
    expected = load_tokenizer()([r["text"] for r in rows], padding="max_length", truncation=True, max_length=16)
    assert data.test.inputs["text"][:, 0].tolist() == expected["input_ids"]
    assert data.test.inputs["text"][:, 1].tolist() == expected["attention_mask"]
    assert read_manifest(adapter.cache_path(mvsa_root))["texts_truncated"] == {"train": 0, "val": 0, "test": 1}


def test_second_load_reads_the_cache_and_writes_never_reach_it(mvsa_root, monkeypatch):
    calls = count_calls(monkeypatch, helper, "read_rgb")
    first = MVSA.load(mvsa_root)
    assert calls[0] == 12
    original = first.train.inputs["image"][0].clone()
    first.train.inputs["image"][0] = 7  # copy-on-write mapping: this process's pages only
    second = MVSA.load(mvsa_root)
    assert calls[0] == 12
    assert torch.equal(second.train.inputs["image"][0], original)
    assert MVSA.status(mvsa_root)[0] == "prepared"


def test_missing_image_is_one_line_naming_it(mvsa_root):
    victim = mvsa_root / "MVSA_Single" / "data" / "5.jpg"
    victim.unlink()
    assert MVSA.status(mvsa_root)[0] == "missing" and str(victim) in MVSA.status(mvsa_root)[1]
    with pytest.raises(UsageError) as err:
        MVSA.load(mvsa_root)
    message = str(err.value)
    assert str(victim) in message and "train.jsonl" in message and "\n" not in message


def test_corrupt_jpeg_is_one_line_naming_it(mvsa_root):
    victim = mvsa_root / "MVSA_Single" / "data" / "8.jpg"
    victim.write_bytes(victim.read_bytes()[:120])  # truncated mid-stream
    with pytest.raises(UsageError) as err:
        MVSA.load(mvsa_root)
    assert str(victim) in str(err.value) and "download it again" in str(err.value) and "\n" not in str(err.value)


def test_damaged_jsonl_names_the_line(mvsa_root):
    path = mvsa_root / "MVSA_Single" / "dev.jsonl"
    path.write_text(path.read_text(encoding="utf-8") + '{"id": "99", "label": "posi', encoding="utf-8")
    with pytest.raises(UsageError, match="line 4 is not valid JSON") as err:
        MVSA.load(mvsa_root)
    assert str(path) in str(err.value)


def test_image_outside_the_dataset_folder_is_refused(mvsa_root):
    path = mvsa_root / "MVSA_Single" / "test.jsonl"
    rows = helper.read_jsonl(path)
    rows[2]["img"] = "../elsewhere.jpg"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(UsageError, match="row 3 of .*test.jsonl names the image '../elsewhere.jpg' outside"):
        MVSA.load(mvsa_root)


def test_wrong_number_of_classes_is_refused(mvsa_root):
    path = mvsa_root / "MVSA_Single" / "train.jsonl"
    rows = [r for r in helper.read_jsonl(path) if r["label"] != "neutral"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(UsageError, match="has 2 distinct labels, mvsa has 3"):
        MVSA.load(mvsa_root)


def test_absent_dataset_says_which_file(tmp_path, cache):
    ok, why = FOOD101.available(tmp_path)
    assert not ok and str(tmp_path / "food101" / "train.jsonl") in why and "kaggle" in why
    ok, why = MVSA.available(None)
    assert not ok and "BENCH_DATA" in why
    assert MVSA.status(tmp_path)[0] == "missing"


def test_interrupted_preparation_leaves_no_cache(mvsa_root, cache, monkeypatch):
    # Ctrl-C while images are being decoded into the scratch arrays
    interrupt_at_call(monkeypatch, helper, "read_rgb", 7)
    with pytest.raises(KeyboardInterrupt):
        MVSA.load(mvsa_root)
    assert list((cache / "mvsa").iterdir()) == []  # neither a cache nor a scratch or temporary folder
    assert MVSA.status(mvsa_root)[0] == "raw found"


def test_scratch_folder_of_a_killed_preparation_is_removed(mvsa_root):
    final = MVSA.cache_path(mvsa_root)
    left = final.parent / f".{final.name}.tmp-{socket.gethostname()}-999999999-scratch-x"  # no such pid
    left.mkdir(parents=True)
    (left / "train_image.npy").write_bytes(b"half")
    MVSA.load(mvsa_root)
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_bench_data_lists_and_prepares(run_cli, mvsa_root):
    code, out, _ = run_cli("data", "--data-root", str(mvsa_root))
    assert code == 0 and "mvsa: raw found: not prepared yet" in out
    assert "food101: missing: " in out and str(mvsa_root / "food101" / "train.jsonl") in out
    code, out, _ = run_cli("data", "prepare", "mvsa", "--data-root", str(mvsa_root))
    assert code == 0 and "mvsa: prepared in" in out
    code, out, _ = run_cli("data", "--data-root", str(mvsa_root))
    assert "mvsa: prepared: cache" in out and "(6 train / 3 val / 3 test)" in out
