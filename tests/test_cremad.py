"""CREMA-D adapters (OGM-GE and MLA protocols) on a tiny copy written in the real layout by real encoders
(16-bit WAV, FLV1 video with an MP3 track), their cache and verification, the shared media features against
plain formulas, and ../shared/data (split files and manifests, no media)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import wave

import numpy as np
import pytest
import torch
from call_spies import count_calls, interrupt_at_call
from media_fixtures import (
    CREMAD_EMOTIONS,
    MLA_NAMES,
    cremad_label,
    frame_colour,
    plain_kaldi_fbank,
    plain_log_stft,
    private_copy,
    tone,
    write_tiny_cremad,
    write_wav,
)

import bench.datasets.cremad as cremad
import bench.media.decode as media
from bench.errors import UsageError
from bench.loop import run_cell
from bench.registry import DATASETS
from bench.testing import tiny_spec

SMALL = 32  # frame size of the quick variants (the registered datasets use 224)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_tiny_cremad(tmp_path_factory.mktemp("cremad") / "data")


@pytest.fixture
def tiny(pristine, tmp_path, monkeypatch):
    """A private copy of the tiny dataset (tests damage files) and a private cache."""
    return private_copy(pristine, tmp_path, monkeypatch, cremad.VERIFY_ENV)


@pytest.fixture
def registered():
    """Register quick variants under temporary names; unregister them afterwards."""
    names = []

    def register(name, adapter):
        DATASETS.register(name, adapter)
        names.append(name)
        return name

    yield register
    for name in names:
        DATASETS.unregister(name)


def small(adapter, **options):
    return dataclasses.replace(adapter, image_size=SMALL, **options)


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------
# End to end


def test_trains_one_epoch_end_to_end(tiny, registered, tmp_path):
    """Through the harness (validation carved, masks, the ResNet-18 encoders on uint8 frames). The MLA protocol
    with small inputs: the OGM-GE protocol's 257x188 spectrogram takes seconds per epoch on one CPU thread, and
    both protocols share everything but the feature functions, tested below."""
    variant = small(cremad.CREMAD_MLA, fbank_frames=64)
    spec = dataclasses.replace(
        tiny_spec("late_fusion", missing_rate=0.3), dataset=registered("_cremad_mla_small", variant), epochs=1
    )
    result = run_cell(spec, data_root=tiny.root)
    sizes = result["notes"]["split_sizes"]
    assert sizes["train"] + sizes["val"] == len(tiny.mla_train) and sizes["val"] == 6  # one per class carved
    assert sizes["test"] == result["metrics"]["num_test_samples"] == len(tiny.mla_test)
    assert set(result["metrics"]["per_modality_accuracy"]) == {"audio", "visual"}
    caches = list((tmp_path / "cache" / variant.info.name).glob("v1-*/manifest.json"))
    assert len(caches) == 1 and json.loads(caches[0].read_text())["verification"] == "SHA-256 verified"


def test_registered_defaults_have_the_official_shapes(tiny):
    ogm, mla = cremad.CREMAD.load(tiny.root), cremad.CREMAD_MLA.load(tiny.root)
    assert [(m.name, m.shape, m.kind) for m in ogm.modalities] == [
        ("audio", (1, 257, 188), "spectrogram_resnet18"),
        ("visual", (3, 1, 224, 224), "frames_resnet18"),
    ]
    assert [m.shape for m in mla.modalities] == [(1, 1024, 128), (3, 3, 224, 224)]
    for data in (ogm, mla):
        assert data.val is None
        assert data.train.inputs["visual"].dtype == torch.uint8
        assert data.train.inputs["audio"].dtype == torch.float32
        for spec in data.modalities:
            assert tuple(data.test.inputs[spec.name].shape[1:]) == spec.shape


def test_protocols_keep_their_own_splits_and_class_orders(tiny):
    ogm = small(cremad.CREMAD).prepare(tiny.root)
    mla = small(cremad.CREMAD_MLA).prepare(tiny.root)
    ogm_manifest, mla_manifest = (json.loads((d / "manifest.json").read_text()) for d in (ogm, mla))
    assert ogm_manifest["clips"] == {"train": tiny.train, "test": tiny.test}
    assert mla_manifest["clips"] == {"train": tiny.mla_train, "test": tiny.mla_test}
    assert ogm_manifest["classes"] == list(CREMAD_EMOTIONS)
    sorted_names = sorted(MLA_NAMES.values())
    assert mla_manifest["classes"] == sorted_names
    ogm_labels = np.load(ogm / "train_label.npy")
    mla_labels = np.load(mla / "train_label.npy")
    assert ogm_labels.tolist() == [cremad_label(c) for c in tiny.train]
    assert mla_labels.tolist() == [sorted_names.index(MLA_NAMES[c.split("_")[2]]) for c in tiny.mla_train]
    assert ogm_labels.tolist() != [sorted_names.index(MLA_NAMES[c.split("_")[2]]) for c in tiny.train]


def test_frames_are_the_official_one_per_second_picks(tiny):
    """Every written frame is flat: red tells the class, green twice the frame index (30 fps)."""
    ogm = small(cremad.CREMAD).load(tiny.root)
    mla = small(cremad.CREMAD_MLA).load(tiny.root)
    for clip, frames in zip(tiny.train, ogm.train.inputs["visual"]):
        red, green, _ = frame_colour(cremad_label(clip), 0)
        centre = frames[:, 0, SMALL // 2, SMALL // 2].int()
        assert abs(int(centre[0]) - red) <= 6 and abs(int(centre[1]) - green) <= 6, clip
    for clip, frames in zip(tiny.mla_train, mla.train.inputs["visual"]):
        kept = int(np.floor(tiny.seconds[clip] * 30 - 1) // 30) + 1  # frames 0, 30, 60, ... that exist
        expected = [30 * k * (kept // 3) for k in range(3)]  # official picks k * (n // 3)
        green = frames[1, :, SMALL // 2, SMALL // 2].int().tolist()
        assert all(abs(g - 2 * i) <= 6 for g, i in zip(green, expected)), (clip, kept, green)


def test_ogm_ge_spectrogram_is_the_librosa_formula(tiny):
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    data = small(cremad.CREMAD).load(tiny.root)  # the frame size does not touch the audio
    clip = tiny.train[3]
    rate, pcm = wavfile.read(tiny.wav(clip))
    x = resample_poly(pcm / 32768.0, 441, 320)  # 16 kHz -> 22.05 kHz
    x = np.clip(np.tile(x, 3)[: 3 * 22050], -1, 1)
    expected = plain_log_stft(x, 512, 353)
    assert rate == 16000 and expected.shape == (257, 188)
    # compared as magnitudes: float32 audio (as librosa's) leaves rounding noise far below the spectrum's peak,
    # which the log makes large in the quietest bins
    got = np.exp(data.train.inputs["audio"][3, 0].numpy())
    np.testing.assert_allclose(got, np.exp(expected), rtol=1e-3, atol=1e-6 * np.exp(expected).max())


def test_mla_fbank_is_the_kaldi_formula(tiny):
    from scipy.io import wavfile

    data = small(cremad.CREMAD_MLA).load(tiny.root)
    row = 1
    clip = tiny.mla_train[row]
    _, pcm = wavfile.read(tiny.wav(clip))
    x = pcm / 32768.0
    expected = plain_kaldi_fbank(x - x.mean(), 16000, 128, window="hanning")
    got = data.train.inputs["audio"][row, 0].numpy()
    assert len(expected) < 1024
    np.testing.assert_allclose(got[: len(expected)], expected, atol=2e-3)
    assert (got[len(expected) :] == 0).all()  # zero-padded to 1,024 frames


def test_kaldi_fbank_matches_torchaudio():
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    x = torch.from_numpy(tone(440, 1.2, 16000) + tone(3000, 1.2, 16000, amplitude=0.05, seed=1))
    for window, bins in (("povey", 23), ("hanning", 128), ("hamming", 40)):
        expected = kaldi.fbank(
            x[None],
            sample_frequency=16000,
            num_mel_bins=bins,
            window_type=window,
            dither=0.0,
            use_energy=False,
            htk_compat=True,
        )
        torch.testing.assert_close(
            media.kaldi_fbank(x, 16000, num_mel_bins=bins, window=window), expected, atol=2e-3, rtol=0
        )


def test_kaldi_fbank_matches_kaldi_native_fbank():
    """The same parity against a second, independent implementation of Kaldi's ``compute-fbank-feats``: the
    C++ ``kaldi-native-fbank`` (k2-fsa), which the test extra installs; torchaudio has no build for every torch
    release this project supports, so the test above may skip, this one must not."""
    knf = pytest.importorskip("kaldi_native_fbank")
    x = tone(440, 1.2, 16000) + tone(3000, 1.2, 16000, amplitude=0.05, seed=1)
    # Kaldi refuses 128 bins at 16 kHz (some triangles hold no FFT bin; torchaudio computes them anyway), so
    # the hanning window is checked at 80 bins here.
    for window, bins in (("povey", 23), ("hanning", 80), ("hamming", 40)):
        options = knf.FbankOptions()
        options.frame_opts.samp_freq = 16000
        options.frame_opts.dither = 0.0
        options.frame_opts.window_type = window
        options.mel_opts.num_bins = bins
        options.use_energy = False
        online = knf.OnlineFbank(options)
        online.accept_waveform(16000, x.astype(np.float32).tolist())
        online.input_finished()
        expected = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
        got = media.kaldi_fbank(x, 16000, num_mel_bins=bins, window=window).numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)  # measured: at most 2.3e-4


def test_a_pure_tone_lands_in_its_mel_band():
    rate, frequency = 16000, 1000.0
    features = media.kaldi_fbank(tone(frequency, 0.5, rate), rate, num_mel_bins=40).mean(0)
    banks = media.kaldi_mel_banks(40, 512, rate)
    expected = int(banks[:, int(round(frequency * 512 / rate))].argmax())
    assert int(features.argmax()) == expected


# --------------------------------------------------------------------------------------------------
# Cache


def test_second_load_reads_the_cache_without_decoding(tiny, monkeypatch):
    calls = count_calls(monkeypatch, cremad, "read_wav")
    variant = small(cremad.CREMAD)
    first = variant.load(tiny.root)
    assert calls[0] == len(tiny.train) + len(tiny.test)
    second = variant.load(tiny.root)
    assert calls[0] == len(tiny.train) + len(tiny.test)
    assert torch.equal(first.train.inputs["visual"], second.train.inputs["visual"])


def test_loaded_inputs_are_copy_on_write_maps_of_the_cache(tiny):
    variant = small(cremad.CREMAD)
    data = variant.load(tiny.root)
    before = data.train.inputs["visual"].clone()
    data.train.inputs["visual"].zero_()  # nothing in bench writes inputs in place; if it did:
    again = variant.load(tiny.root)
    assert torch.equal(again.train.inputs["visual"], before) and before.any()


def test_each_media_file_is_hashed_once(tiny, monkeypatch):
    hashed = []
    real = media.sha256_of
    monkeypatch.setattr(media, "sha256_of", lambda path, *a: hashed.append(path) or real(path, *a))
    small(cremad.CREMAD).prepare(tiny.root)
    clips = len(tiny.train) + len(tiny.test)
    assert len(hashed) == 2 * clips
    small(cremad.CREMAD_MLA).prepare(tiny.root)  # another cache, same files: no hashing
    assert len(hashed) == 2 * clips
    touched = tiny.wav(tiny.train[0])
    touched.write_bytes(touched.read_bytes())  # same content, new modification time
    small(cremad.CREMAD_MLA, fbank_frames=64).prepare(tiny.root)  # a third cache: only the touched file is hashed
    assert hashed[2 * clips :] == [touched]


@pytest.mark.parametrize("where", ["decoding", "writing"])
def test_interrupted_preparation_leaves_no_cache(tiny, monkeypatch, where):
    import bench.media.cache

    if where == "decoding":
        interrupt_at_call(monkeypatch, cremad, "sampled_frames", 3)
    else:
        interrupt_at_call(monkeypatch, bench.media.cache.np, "save", 3)
    variant = small(cremad.CREMAD)
    with pytest.raises(KeyboardInterrupt):
        variant.load(tiny.root)
    cache = tiny.root.parent / "cache" / "cremad"
    assert [p.name for p in cache.iterdir()] == ["sha256-memo.json"]  # no cache, no scratch, no temporary
    assert variant.status(tiny.root)[0] == "raw found"
    monkeypatch.undo()
    monkeypatch.setenv("BENCH_CACHE", str(tiny.root.parent / "cache"))
    variant.load(tiny.root)
    assert variant.status(tiny.root)[0] == "prepared"


def test_scratch_left_by_a_killed_preparation_is_removed(tiny):
    import socket

    variant = small(cremad.CREMAD)
    final = variant.cache_path(tiny.root)
    left = final.parent / f".{final.name}.tmp-{socket.gethostname()}-999999999-scratch-x"  # no such pid
    left.mkdir(parents=True)
    (left / "train_visual.npy").write_bytes(b"half")
    variant.prepare(tiny.root)
    assert sorted(p.name for p in final.parent.iterdir()) == ["sha256-memo.json", final.name]


# --------------------------------------------------------------------------------------------------
# Missing, damaged and unverified files


def test_checksum_mismatch_names_the_files_and_can_be_turned_off(tiny, monkeypatch):
    damaged = [tiny.wav(tiny.test[2]), tiny.flv(tiny.train[5])]
    write_wav(damaged[0], tone(999, 1.0, 16000), 16000)  # another recording
    data = bytearray(damaged[1].read_bytes())
    data[-10] ^= 0xFF  # one flipped byte, same size
    damaged[1].write_bytes(bytes(data))
    variant = small(cremad.CREMAD)
    with pytest.raises(UsageError) as err:
        variant.load(tiny.root)
    message = _one_line(err)
    assert message.startswith("2 of 36 CREMA-D media files differ")
    for path in damaged:
        assert str(path.relative_to(tiny.folder)) in message
    assert "SHA-256 differs" in message and "BENCH_VERIFY_MEDIA=0" in message and "git lfs pull" in message
    monkeypatch.setenv("BENCH_VERIFY_MEDIA", "0")
    directory = variant.prepare(tiny.root)
    assert json.loads((directory / "manifest.json").read_text())["verification"].startswith("not verified")
    assert not dataclasses.replace(variant, verify=False).verifies()


def test_missing_media_are_named_by_available(tiny):
    tiny.flv(tiny.test[1]).unlink()
    ok, why = cremad.CREMAD.available(tiny.root)
    assert not ok and str(tiny.flv(tiny.test[1])) in why and "git lfs pull" in why
    shutil.rmtree(tiny.folder / "AudioWAV")
    ok, why = cremad.CREMAD.available(tiny.root)
    assert not ok and "AudioWAV not found" in why and "git lfs clone" in why


def test_missing_split_files_and_manifests_are_named(tiny, monkeypatch):
    (tiny.folder / "splits_mla" / "my_test_cre.txt").unlink()
    ok, why = cremad.CREMAD_MLA.available(tiny.root)
    assert not ok and "my_test_cre.txt not found" in why and "Multimodal-Learning-with-Alternating" in why
    assert cremad.CREMAD.available(tiny.root) == (True, "")
    (tiny.folder / "lfs_manifest_VideoFlash.tsv").unlink()
    ok, why = cremad.CREMAD.available(tiny.root)
    assert not ok and "lfs_manifest_VideoFlash.tsv not found" in why and "BENCH_VERIFY_MEDIA=0" in why
    monkeypatch.setenv("BENCH_VERIFY_MEDIA", "0")
    assert cremad.CREMAD.available(tiny.root) == (True, "")


def test_bad_split_line_names_the_file_and_line(tiny):
    path = tiny.folder / "splits_ogm_ge" / "test.csv"
    path.write_text(path.read_text() + "1091_XYZ_ANG_XX,Angry\n")
    ok, why = cremad.CREMAD.available(tiny.root)
    assert not ok and f"{path} line {len(tiny.test) + 1}" in why and "NEU, HAP, SAD, FEA, DIS, ANG" in why


def test_lfs_pointer_instead_of_media_says_git_lfs_pull(tiny, monkeypatch):
    path = tiny.wav(tiny.train[2])
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 72862\n")
    variant = small(cremad.CREMAD)
    with pytest.raises(UsageError) as err:
        variant.load(tiny.root)
    assert "(a Git LFS pointer: run git lfs pull)" in _one_line(err) and path.name in str(err.value)
    monkeypatch.setenv("BENCH_VERIFY_MEDIA", "0")
    with pytest.raises(UsageError) as err:
        variant.load(tiny.root)
    assert _one_line(err).startswith(f"cannot read {path} (a Git LFS pointer, not the media: run git lfs pull)")


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_video_of_an_unverified_copy_is_one_line(tiny, monkeypatch, keep):
    monkeypatch.setenv("BENCH_VERIFY_MEDIA", "0")
    clip = max(tiny.train, key=lambda c: tiny.seconds[c])
    path = tiny.flv(clip)
    path.write_bytes(path.read_bytes()[: int(keep * path.stat().st_size)])
    with pytest.raises(UsageError) as err:
        small(cremad.CREMAD).load(tiny.root)
    message = _one_line(err)
    assert str(path) in message and "download it again" in message
    assert ("is truncated" in message) if keep == 0.5 else message.startswith(f"cannot decode {path}")


def test_corrupt_and_truncated_wav_are_one_line(tiny, monkeypatch):
    monkeypatch.setenv("BENCH_VERIFY_MEDIA", "0")
    path = tiny.wav(tiny.test[0])
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(UsageError) as err:
        small(cremad.CREMAD).load(tiny.root)
    assert _one_line(err).startswith(f"cannot read {path}")
    write_wav(path, tone(300, 1.0, 16000), 16000)
    with wave.open(str(path)) as handle:
        assert handle.getnframes() == 16000
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UsageError, match="truncated") as err:
        small(cremad.CREMAD).load(tiny.root)
    assert str(path) in _one_line(err)


# --------------------------------------------------------------------------------------------------
# bench data, and the real data folder (split files and manifests only)


def test_bench_data_lists_both_protocols(run_cli, tiny, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    code, out, _ = run_cli("data")
    assert code == 0 and "cremad: missing: no data root" in out and "cremad_mla: missing: no data root" in out
    assert "ODbL" in out and cremad.HOMEPAGE in out
    code, out, _ = run_cli("data", "--data-root", str(tiny.root))
    assert "cremad: raw found: not prepared yet" in out and "cremad_mla: raw found" in out
    assert "cremad/VideoFlash/<clip>.flv" in out


def test_shared_data_without_media_is_reported_missing(data_root):
    for adapter in (cremad.CREMAD, cremad.CREMAD_MLA):
        ok, why = adapter.available(data_root)
        assert not ok and "\n" not in why
    assert "AudioWAV not found" in cremad.CREMAD.available(data_root)[1]
    assert "my_train_cre.txt not found" in cremad.CREMAD_MLA.available(data_root)[1]
    assert cremad.CREMAD.status(data_root)[0] == "missing"


def test_shared_split_files_parse_to_the_published_counts(data_root):
    folder = data_root / "cremad"
    if not (folder / "splits_ogm_ge" / "train.csv").is_file():
        pytest.skip("no CREMA-D split files in the data root")
    train = cremad._split_rows(folder / "splits_ogm_ge" / "train.csv", "ogm_ge")
    test = cremad._split_rows(folder / "splits_ogm_ge" / "test.csv", "ogm_ge")
    assert (len(train), len(test)) == (6698, 744)
    counts = np.bincount([label for _, label in train + test], minlength=6)
    # NEU HAP SAD FEA DIS ANG: CREMA-D's 1,087 / 1,271 x 5 intended emotions
    assert counts.tolist() == [1087, 1271, 1271, 1271, 1271, 1271]
    manifest = cremad._read_manifest_tsv(folder / "lfs_manifest_AudioWAV.tsv")
    assert len(manifest) == 7442 and {f"AudioWAV/{c}.wav" for c, _ in train + test} == set(manifest)
