"""Tiny audio-visual datasets written in the real on-disk layouts by real encoders (PyAV's FFmpeg and the
standard library's ``wave``), for the media adapters' tests.

Content is a function of the class, so a model can learn it, and of the frame index, so tests can tell which
frames an adapter kept: every frame is one flat colour with red = 40 * (class % 6) + 20, green = 2 * frame
index (mod 256) and blue = 128; the audio is a tone of 300 + 150 * class Hz (Kinetics-Sounds: a second,
different tone on the right channel).
"""

from __future__ import annotations

import hashlib
import shutil
import wave
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # OGM-GE's class order
MLA_NAMES = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happy", "NEU": "Neutral", "SAD": "Sad"}
SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")
FRAME_SIZE = (64, 48)  # width, height (the real CREMA-D videos are 480x360, Kinetics clips vary)


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (amplitude * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM; ``samples`` is (n,) or (channels, n) in [-1, 1)."""
    samples = np.atleast_2d(samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(samples.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples.T, -1, 0.999) * 32768).astype("<i2").tobytes())


def frame_colour(label: int, index: int) -> tuple[int, int, int]:
    return 40 * (label % 6) + 20, (2 * index) % 256, 128


def write_video(
    path: Path,
    *,
    label: int,
    seconds: float,
    fps: int,
    container: str,
    video_codec: str,
    audio: np.ndarray | None = None,
    audio_rate: int = 44100,
    audio_codec: str = "aac",
) -> None:
    """A video of flat frames (see the module docstring) and, when given, an audio stream of ``audio``
    ((channels, n) float32)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = FRAME_SIZE
    # MP4s with the index first ("faststart"), as YouTube serves them: a truncated one still opens
    options = {"movflags": "faststart"} if container == "mp4" else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        video = out.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio is not None:
            # FFmpeg's AAC encoder is slow with its default coder; "fast" is plenty for a test tone
            options = {"aac_coder": "fast"} if audio_codec == "aac" else {}
            sound = out.add_stream(audio_codec, rate=audio_rate, options=options)
            sound.layout = "stereo" if audio.shape[0] == 2 else "mono"
        for index in range(int(round(seconds * fps))):
            pixels = np.empty((height, width, 3), dtype=np.uint8)
            pixels[:] = frame_colour(label, index)
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=sound.layout.name
            )
            frame.sample_rate = audio_rate
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# CREMA-D


@dataclass
class TinyCremad:
    root: Path  # the data root; the dataset is root / "cremad"
    train: list[str] = field(default_factory=list)  # OGM-GE split
    test: list[str] = field(default_factory=list)
    mla_train: list[str] = field(default_factory=list)
    mla_test: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.root / "cremad"

    def wav(self, clip: str) -> Path:
        return self.folder / "AudioWAV" / f"{clip}.wav"

    def flv(self, clip: str) -> Path:
        return self.folder / "VideoFlash" / f"{clip}.flv"


def private_copy(pristine, tmp_path: Path, monkeypatch, unset_env: str, **fields):
    """A copy of a tiny dataset under tmp_path / "data" (tests damage files), with BENCH_CACHE pointed at a
    private tmp_path / "cache" and the adapter's switch `unset_env` cleared; `fields` replace more of its paths."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(unset_env, raising=False)
    copy = replace(pristine, root=tmp_path / "data", **fields)
    shutil.copytree(pristine.root, copy.root)
    return copy


def cremad_label(clip: str) -> int:
    return CREMAD_EMOTIONS.index(clip.split("_")[2])


def write_tiny_cremad(root: Path, *, train_per_class: int = 2, test_per_class: int = 1) -> TinyCremad:
    """CREMA-D as its repository ships it plus the split files bench reads, under ``root/cremad``:

    ``AudioWAV/<clip>.wav`` (16 kHz mono 16-bit), ``VideoFlash/<clip>.flv`` (FLV1 video at 30 fps with an MP3
    audio track, as the real clips), the LFS manifests ``lfs_manifest_{AudioWAV,VideoFlash}.tsv`` (path,
    sha256, size_bytes) of these files, OGM-GE's ``splits_ogm_ge/{train,test,stat}.csv`` (``train.csv`` with a
    UTF-8 BOM) and MLA's ``splits_mla/my_{train,test}_cre.txt`` with a different split of the same clips.
    Clip lengths alternate 2.0, 2.5 and 3.2 s, so a clip keeps 2, 3 or 4 frames at one frame per second.
    """
    data = TinyCremad(root=Path(root))
    folder = data.folder
    lengths = (2.0, 2.5, 3.2)
    clips: list[str] = []
    for label, emotion in enumerate(CREMAD_EMOTIONS):
        for k in range(train_per_class + test_per_class):
            clip = f"{1001 + k}_{SENTENCES[label % len(SENTENCES)]}_{emotion}_XX"
            seconds = lengths[(label + k) % len(lengths)]
            data.seconds[clip] = seconds
            write_wav(data.wav(clip), tone(300 + 150 * label, seconds, 16000, seed=len(clips)), 16000)
            write_video(
                data.flv(clip),
                label=label,
                seconds=seconds,
                fps=30,
                container="flv",
                video_codec="flv",
                audio=tone(300 + 150 * label, seconds, 22050)[None],
                audio_rate=22050,
                audio_codec="libmp3lame",
            )
            (data.train if k < train_per_class else data.test).append(clip)
            clips.append(clip)
    # MLA: another split of the same clips (the last training clip of each class swaps with its test clip)
    for label in range(len(CREMAD_EMOTIONS)):
        own = [c for c in clips if cremad_label(c) == label]
        data.mla_test.append(own[train_per_class - 1])
        data.mla_train += [c for c in own if c != own[train_per_class - 1]]
    for folder_name, suffix in (("AudioWAV", "wav"), ("VideoFlash", "flv")):
        rows = ["path\tsha256\tsize_bytes"]
        for clip in sorted(clips):
            path = folder / folder_name / f"{clip}.{suffix}"
            rows.append(f"{folder_name}/{clip}.{suffix}\t{_sha256(path)}\t{path.stat().st_size}")
        (folder / f"lfs_manifest_{folder_name}.tsv").write_text("\n".join(rows) + "\n")
    splits = folder / "splits_ogm_ge"
    splits.mkdir()
    (splits / "train.csv").write_text(
        "\ufeff" + "".join(f"{c},{c.split('_')[2]}\n" for c in data.train), encoding="utf-8"
    )
    (splits / "test.csv").write_text("".join(f"{c},{c.split('_')[2]}\n" for c in data.test))
    (splits / "stat.csv").write_text("\ufeff" + "\n".join(CREMAD_EMOTIONS) + "\n", encoding="utf-8")
    mla = folder / "splits_mla"
    mla.mkdir()
    for name, chosen in (("my_train_cre.txt", data.mla_train), ("my_test_cre.txt", data.mla_test)):
        (mla / name).write_text("".join(f"{c}.flv {MLA_NAMES[c.split('_')[2]]}\n" for c in chosen))
    return data


# --------------------------------------------------------------------------------------------------
# Kinetics-Sounds


@dataclass
class TinyKineticsSounds:
    root: Path
    train: dict[str, int] = field(default_factory=dict)  # clip id -> label
    test: dict[str, int] = field(default_factory=dict)
    videos: dict[str, Path] = field(default_factory=dict)


def write_tiny_kinetics_sounds(
    root: Path,
    *,
    labels: tuple[int, ...] = (4, 17, 30),
    train_per_class: int = 2,
    test_per_class: int = 1,
    seconds: float = 10.0,
    fps: int = 3,
    audio_rate: int = 22050,
) -> TinyKineticsSounds:
    """OGM-GE's lists ``kinetics_sounds_splits/my_{train,test}.txt`` (``<id>,10,<label>``; train ids
    ``YouTubeID_SSSSSS_EEEEEE``, test ids ``YouTubeID_n``) and MP4 clips (H.264 video, stereo AAC audio:
    left a tone of the class, right a fixed 2 kHz tone) under ``kinetics_sounds/videos/``, half of them in
    per-class sub-folders as Kinetics downloads often are."""
    data = TinyKineticsSounds(root=Path(root))
    videos = data.root / "kinetics_sounds" / "videos"
    for label in labels:
        for k in range(train_per_class + test_per_class):
            is_train = k < train_per_class
            clip = f"yt{label:02d}x{k}_{10 * k:06d}_{10 * k + 10:06d}" if is_train else f"-yt{label:02d}x{k}_{k}"
            left = tone(300 + 150 * label, seconds, audio_rate)
            right = tone(2000, seconds, audio_rate, amplitude=0.2)
            path = (videos / f"class{label}" if k % 2 else videos) / f"{clip}.mp4"
            write_video(
                path,
                label=label,
                seconds=seconds,
                fps=fps,
                container="mp4",
                video_codec="libx264",
                audio=np.stack([left, right]),
                audio_rate=audio_rate,
                audio_codec="aac",
            )
            (data.train if is_train else data.test)[clip] = label
            data.videos[clip] = path
    lists = data.root / "kinetics_sounds_splits"
    lists.mkdir(parents=True)
    (lists / "my_train.txt").write_text("".join(f"{c},10,{y}\n" for c, y in data.train.items()))
    (lists / "my_test.txt").write_text("".join(f"{c},10,{y}\n" for c, y in data.test.items()))
    return data


# --------------------------------------------------------------------------------------------------
# Plain references of the published feature formulas (float64 numpy, one frame at a time), for parity tests


def plain_log_stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``np.log(np.abs(librosa.stft(x, n_fft, hop)) + 1e-7)`` written out (librosa < 0.10: reflect padding)."""
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    columns = [np.fft.rfft(padded[s : s + n_fft] * window) for s in range(0, len(padded) - n_fft + 1, hop)]
    return np.log(np.abs(np.stack(columns, axis=1)) + 1e-7)


def plain_kaldi_fbank(x: np.ndarray, rate: int, num_mel_bins: int, window: str = "povey") -> np.ndarray:
    """Kaldi's ``compute-fbank-feats`` (dither 0, no energy, 25 ms / 10 ms frames, snip edges, pre-emphasis
    0.97, DC removal, mel 20 Hz..Nyquist) from its documented definition, frame by frame."""
    length, shift = int(rate * 0.025), int(rate * 0.010)
    padded = 1 << (length - 1).bit_length()
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))
    taper = hann if window == "hanning" else hann**0.85

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    edges = mel(20.0) + (mel(rate / 2) - mel(20.0)) / (num_mel_bins + 1) * np.arange(num_mel_bins + 2)
    weights = np.zeros((num_mel_bins, padded // 2 + 1))
    for b in range(num_mel_bins):
        for k in range(padded // 2):  # the Nyquist bin gets no weight
            m = mel(k * rate / padded)
            if edges[b] < m <= edges[b + 1]:
                weights[b, k] = (m - edges[b]) / (edges[b + 1] - edges[b])
            elif edges[b + 1] < m < edges[b + 2]:
                weights[b, k] = (edges[b + 2] - m) / (edges[b + 2] - edges[b + 1])
    rows = []
    for t in range(1 + (len(x) - length) // shift):
        frame = x[t * shift : t * shift + length].astype(np.float64)
        frame = frame - frame.mean()
        frame = frame - 0.97 * np.concatenate([frame[:1], frame[:-1]])
        power = np.abs(np.fft.rfft(frame * taper, padded)) ** 2
        rows.append(np.log(np.maximum(weights @ power, np.finfo(np.float32).eps)))
    return np.array(rows)
