"""Kinetics-Sounds adapter on tiny MP4 clips (H.264 + stereo AAC) written in the layout users assemble (OGM-GE's
lists, one video per clip id), and on ../shared/data (the lists, no media)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from media_fixtures import frame_colour, plain_kaldi_fbank, private_copy, write_tiny_kinetics_sounds, write_video

import bench.datasets.kinetics_sounds as ks
import bench.media.decode as media
from bench.errors import UsageError
from bench.loop import run_cell
from bench.registry import DATASETS
from bench.testing import tiny_spec

SMALL = dict(image_size=32, fbank_frames=64)  # quick variant; the registered dataset uses 224 and 1,024


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_tiny_kinetics_sounds(tmp_path_factory.mktemp("ks") / "data")


@pytest.fixture
def tiny(pristine, tmp_path, monkeypatch):
    videos = {c: tmp_path / "data" / p.relative_to(pristine.root) for c, p in pristine.videos.items()}
    return private_copy(pristine, tmp_path, monkeypatch, ks.SKIP_ENV, videos=videos)


def small(**options) -> ks.KineticsSounds:
    return dataclasses.replace(ks.KINETICS_SOUNDS, **{**SMALL, **options})


def test_trains_one_epoch_end_to_end(tiny, tmp_path):
    DATASETS.register("_ks_small", small())
    try:
        spec = dataclasses.replace(tiny_spec("late_fusion"), dataset="_ks_small", epochs=1)
        result = run_cell(spec, data_root=tiny.root)
    finally:
        DATASETS.unregister("_ks_small")
    sizes = result["notes"]["split_sizes"]
    assert sizes["train"] + sizes["val"] == len(tiny.train) and sizes["test"] == len(tiny.test)
    assert result["metrics"]["num_test_samples"] == len(tiny.test)
    assert len(list((tmp_path / "cache" / "kinetics_sounds").glob("v1-*/manifest.json"))) == 1


def test_registered_default_shapes_and_labels(tiny):
    data = ks.KINETICS_SOUNDS.load(tiny.root)
    assert [(m.name, m.shape, m.kind) for m in data.modalities] == [
        ("audio", (1, 1024, 128), "spectrogram_resnet18"),
        ("visual", (3, 3, 224, 224), "frames_resnet18"),
    ]
    assert data.val is None and data.train.inputs["visual"].dtype == torch.uint8
    assert data.train.labels.tolist() == list(tiny.train.values())  # list order, labels as listed
    assert data.test.labels.tolist() == list(tiny.test.values())


def test_frames_are_seconds_0_3_6(tiny):
    """Flat frames: red tells the class, green twice the frame index; 3 fps, so second s is frame 3 s."""
    data = small().load(tiny.root)
    for (clip, label), frames in zip(tiny.train.items(), data.train.inputs["visual"]):
        centre = frames[:, :, 16, 16].int()
        assert all(abs(int(r) - frame_colour(label, 0)[0]) <= 6 for r in centre[0]), clip
        expected_green = [frame_colour(label, 3 * second)[1] for second in (0, 3, 6)]
        assert all(abs(int(g) - e) <= 6 for g, e in zip(centre[1], expected_green)), (clip, centre[1])


def test_audio_is_the_normalised_fbank_of_the_left_channel(tiny):
    """The left channel holds the class tone, the right one 2 kHz: the fbank must follow the left channel,
    resampled to 16 kHz, minus the mean of both, normalised as OGM-GE's process_audio.py."""
    data = small(fbank_frames=1024).load(tiny.root)
    clip, label = next(iter(tiny.train.items()))
    samples = media.decode_audio(tiny.videos[clip], 16000, fix="")
    assert samples.shape[0] == 2 and abs(samples.shape[1] - 160000) < 2048  # 10 s, codec priming aside
    expected = plain_kaldi_fbank(samples[0] - samples.mean(), 16000, 128, window="hanning")
    expected = (expected + 4.503877) / (2 * 5.141276)
    got = data.train.inputs["audio"][0, 0].numpy()
    rows = min(len(expected), 1024)
    np.testing.assert_allclose(got[:rows], expected[:rows], atol=2e-3)
    peak = int(np.median(got[:rows].argmax(1)))
    banks = media.kaldi_mel_banks(128, 512, 16000)

    def band(hz: float) -> int:
        return int(banks[:, round(hz * 512 / 16000)].argmax())

    assert abs(peak - band(300 + 150 * label)) <= 1 and abs(peak - band(2000)) > 10  # left tone, not right


def test_missing_clip_is_named_or_skipped_on_request(tiny, monkeypatch):
    clip = list(tiny.test)[1]
    tiny.videos[clip].unlink()
    ok, why = ks.KINETICS_SOUNDS.available(tiny.root)
    assert not ok and f"1 of {len(tiny.train) + len(tiny.test)} listed clips have no video" in why
    assert clip in why and "BENCH_SKIP_MISSING_CLIPS=1" in why and "\n" not in why
    monkeypatch.setenv("BENCH_SKIP_MISSING_CLIPS", "1")
    data = small().load(tiny.root)
    assert len(data.test) == len(tiny.test) - 1 and len(data.train) == len(tiny.train)
    state, detail = small().status(tiny.root)
    assert state == "prepared" and "1 dropped" in detail


def test_video_without_audio_track(tiny, monkeypatch):
    clip, label = list(tiny.train.items())[2]
    path = tiny.videos[clip]
    write_video(path, label=label, seconds=10, fps=3, container="mp4", video_codec="libx264")  # no audio
    with pytest.raises(UsageError) as err:
        small().load(tiny.root)
    assert str(err.value).startswith(f"{path} has no audio stream;") and "\n" not in str(err.value)
    monkeypatch.setenv("BENCH_SKIP_MISSING_CLIPS", "1")
    directory = small().prepare(tiny.root)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["dropped"] == {clip: f"{path} has no audio stream"}
    assert clip not in manifest["clips"]["train"] and len(manifest["clips"]["train"]) == len(tiny.train) - 1


@pytest.mark.parametrize("keep, expected", [(0.6, "is truncated"), (40 / 200_000, "cannot decode")])
def test_truncated_video_is_one_line_naming_it(tiny, keep, expected):
    path = tiny.videos[list(tiny.train)[0]]
    path.write_bytes(path.read_bytes()[: max(40, int(keep * path.stat().st_size))])
    with pytest.raises(UsageError) as err:
        small().load(tiny.root)
    message = str(err.value)
    assert expected in message and str(path) in message and "download it again" in message and "\n" not in message


def test_two_videos_for_one_clip_and_bad_list_lines(tiny):
    path = next(iter(tiny.videos.values()))
    twin = tiny.root / "kinetics_sounds" / "elsewhere" / path.with_suffix(".mkv").name
    twin.parent.mkdir()
    shutil.copy(path, twin)
    ok, why = ks.KINETICS_SOUNDS.available(tiny.root)
    assert not ok and str(path) in why and str(twin) in why
    twin.unlink()
    lists = tiny.root / ks.LISTS["test"]
    lists.write_text(lists.read_text() + "abc_1,10,31\n")
    ok, why = ks.KINETICS_SOUNDS.available(tiny.root)
    assert not ok and f"line {len(tiny.test) + 1}" in why and "label 0-30" in why


def test_shared_lists_without_videos(data_root):
    lists = data_root / "kinetics_sounds_splits"
    if not (lists / "my_train.txt").is_file():
        pytest.skip("no Kinetics-Sounds lists in the data root")
    ok, why = ks.KINETICS_SOUNDS.available(data_root)
    assert not ok and f"{data_root / 'kinetics_sounds'} not found" in why and ks.KINETICS in why
    assert ks.KINETICS_SOUNDS.status(data_root)[0] == "missing"
    train, test = ks._list_rows(lists / "my_train.txt"), ks._list_rows(lists / "my_test.txt")
    assert (len(train), len(test)) == (14799, 2597)
    assert {label for _, label in train} == set(range(31)) == {label for _, label in test}


def test_bench_data_lists_it(run_cli, tiny):
    code, out, _ = run_cli("data", "--data-root", str(tiny.root))
    assert code == 0 and "kinetics_sounds: raw found: not prepared yet" in out
    assert "kinetics_sounds/**/<clip id>.mp4" in out and "CC BY 4.0" in out
