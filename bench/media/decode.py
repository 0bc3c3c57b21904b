"""Decoding and audio-visual features shared by the media adapters (CREMA-D, Kinetics-Sounds, ...).

* **Reading.** :func:`read_wav` reads PCM WAV with the standard library; :func:`decode_audio` and
  :func:`frames_per_second` decode any container FFmpeg knows (FLV, MP4, MKV, WebM) through PyAV
  (``pip install 'bench-mml[media]'``), which links FFmpeg's own libraries, so no ``ffmpeg`` binary is needed.
  A missing, unreadable or truncated file is a :class:`~bench.errors.UsageError` of one line naming the file and
  the fix the adapter passes in (``fix``).
* **Features.** :func:`resample` (polyphase, :func:`scipy.signal.resample_poly`), :func:`log_stft` (the
  ``np.log(np.abs(librosa.stft(x)) + 1e-7)`` of the OGM-GE loaders) and :func:`kaldi_fbank` (Kaldi's
  ``compute-fbank-feats`` as ``torchaudio.compliance.kaldi.fbank`` computes it, written here in torch).
* **Frames.** :func:`frames_per_second` keeps the first frame of every second, as the official frame extraction
  does; :func:`pick_frames` is the official loaders' choice of frames among those; :func:`rgb_frame` resizes as
  ``torchvision.transforms.Resize`` does on a PIL image.
* **Checksums.** :func:`verify_sha256` hashes each file once (a memo keyed by size and mtime).

Preparing these features once into a cache, and loading it, is :mod:`bench.media.prepared`'s part.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import UsageError
from bench.store import atomic_write_text

__all__ = [
    "MissingStream",
    "clip_fbank",
    "decode_audio",
    "describe_bad_file",
    "frames_per_second",
    "kaldi_fbank",
    "kaldi_mel_banks",
    "log_stft",
    "pad_or_cut",
    "pick_frames",
    "read_wav",
    "resample",
    "rgb_frame",
    "sampled_frames",
    "sha256_of",
    "reason",
    "text_lines",
    "tile_to",
    "verify_sha256",
]

#: A decoded stream that ends before this fraction of its declared duration, and more than
#: ``_TRUNCATION_SECONDS`` early, is reported as truncated.
_TRUNCATION_FRACTION = 0.8
_TRUNCATION_SECONDS = 0.5
_LFS_POINTER = b"version https://git-lfs"


class MissingStream(UsageError):
    """A readable media file without the stream asked for (e.g. a video without an audio track)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_bad_file(path: Path, exc: BaseException | None = None) -> str:
    """Why ``path`` cannot be decoded, in a few words: absent, empty, a Git LFS pointer, or the decoder's reason."""
    path = Path(path)
    if not path.exists():
        return "not found"
    with contextlib.suppress(OSError):
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as handle:
            if handle.read(len(_LFS_POINTER)) == _LFS_POINTER:
                return "a Git LFS pointer, not the media: run git lfs pull"
    return _first_line(exc) if exc is not None else "unreadable"


def reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for one-line messages."""
    text = str(exc).splitlines()[0] if str(exc) else "corrupt"
    return f"{type(exc).__name__}: {text}"


def text_lines(
    path: Path,
    fix: str,
    *,
    encoding: str = "utf-8",
    missing: str | None = None,
    describe: Callable[[BaseException], str] = reason,
) -> list[tuple[int, str]]:
    """The non-blank lines of a list or jsonl file, each with its 1-based line number (for the adapters' messages).

    An unreadable file is a UsageError ``cannot read <path> (<describe(exc)>); <fix>``; with ``missing``, an
    absent one is ``<path> not found; <missing>`` instead."""
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except FileNotFoundError as exc:
        if missing is None:
            raise UsageError(f"cannot read {path} ({describe(exc)}); {fix}") from None
        raise UsageError(f"{path} not found; {missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path} ({describe(exc)}); {fix}") from None
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


# --------------------------------------------------------------------------------------------------
# Audio


def _declared_frames(path: Path) -> int | None:
    """Frames the ``data`` chunk of a RIFF/WAVE file declares (its size over the format's block size), read
    from the chunk headers; None when the headers do not say (then nothing is checked against it)."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block = 0
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"fmt ":
                fmt = handle.read(size)
                block = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
                handle.seek(size % 2, os.SEEK_CUR)
            elif chunk[:4] == b"data":
                return size // block if block else None
            else:
                handle.seek(size + size % 2, os.SEEK_CUR)


def read_wav(path: Path, *, fix: str) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the sample rate of a PCM or IEEE-float WAV file, read with
    ``scipy.io.wavfile``, which also reads the extensible header (format tag 65534) that ffmpeg and sox write
    for 24-bit and multichannel audio (the standard library's ``wave`` refuses it).

    Integer PCM is scaled as soundfile / ``torchaudio.load`` / ``librosa.load`` scale it: 16-bit by 1/32768,
    8-bit (unsigned) as (x - 128)/128, 24- and 32-bit by 1/2**23 and 1/2**31 (scipy returns 24-bit samples
    left-justified in int32, so both are the int32 value over 2**31); float WAV is returned as it is.
    """
    import warnings

    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # e.g. an unknown extra chunk
            rate, data = wavfile.read(str(path), mmap=False)
        declared = _declared_frames(path)
    except Exception as exc:  # noqa: BLE001 - scipy fails on a malformed header in several ways (one is UnboundLocalError)
        raise UsageError(f"cannot read {path} ({describe_bad_file(path, exc)}); {fix}") from None
    data = data.reshape(len(data), -1)  # (frames, channels)
    frames = data.shape[0]
    if frames == 0:
        raise UsageError(f"{path} holds no samples; {fix}")
    if declared is not None and frames < declared:
        raise UsageError(f"{path} is truncated ({frames} of {declared} samples); {fix}")
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype == np.int16:
        samples = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        samples = (data.astype(np.float64) / float(1 << 31)).astype(np.float32)
    elif data.dtype.kind == "f":
        samples = data.astype(np.float32)
    else:
        raise UsageError(f"cannot read {path} (unsupported sample type {data.dtype}); {fix}")
    return samples.T.copy(), int(rate)


def _declared_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def _check_complete(path: Path, decoded: float, declared: float | None, what: str, fix: str) -> None:
    if declared and decoded < _TRUNCATION_FRACTION * declared and declared - decoded > _TRUNCATION_SECONDS:
        raise UsageError(
            f"{path} is truncated: its {what} decodes to {decoded:.2f} s of the {declared:.2f} s it declares; {fix}"
        )


def _open(path: Path, fix: str) -> Any:
    try:
        import av
    except ImportError:
        raise UsageError("decoding video needs PyAV: pip install 'bench-mml[media]'") from None
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise UsageError(f"cannot decode {path} ({describe_bad_file(path, exc)}); {fix}") from None
    if not container.streams.audio and not container.streams.video:  # e.g. an MP4 cut inside its header
        container.close()
        raise UsageError(f"cannot decode {path} (no audio or video stream found); {fix}")
    return container


class _Decoded:
    """The frames of one stream, decoded packet by packet like FFmpeg's own tools do: a damaged packet is
    skipped, and a container that cannot be read further ends the stream. ``error`` keeps the first problem,
    so that a stream that gives nothing can say why; a stream that stops early is caught by
    :func:`_check_complete`."""

    def __init__(self, container: Any, stream: Any) -> None:
        self.container, self.stream = container, stream
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[Any]:
        import av

        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as exc:
                self.error = self.error or exc
                return
            try:
                frames = self.stream.decode(packet)
            except av.error.FFmpegError as exc:
                self.error = self.error or exc
                continue
            yield from frames

    def nothing(self, path: Path, what: str, fix: str) -> UsageError:
        if self.error is not None:
            return UsageError(f"cannot decode {path} ({describe_bad_file(path, self.error)}); {fix}")
        return UsageError(f"{path} has {what}; {fix}")


def decode_audio(path: Path, rate: int, *, fix: str, check_truncation: bool = True) -> np.ndarray:
    """The first audio stream of a media file as (channels, samples) float32 at ``rate`` Hz.

    The stream is converted by FFmpeg's libswresample to 16-bit PCM at ``rate`` with its channels kept, what
    ``ffmpeg -i clip.mp4 -acodec pcm_s16le -ar RATE clip.wav`` writes (the official audio extraction,
    OGM-GE ``data/VGGSound/mp4_to_wav.py``), then scaled by 1/32768 as ``torchaudio.load`` reads that file.
    Raises :class:`MissingStream` when there is no audio stream.
    """
    container = _open(path, fix)  # first: it says how to install PyAV when it is missing
    import av

    with container:
        if not container.streams.audio:
            raise MissingStream(f"{path} has no audio stream; {fix}")
        stream = container.streams.audio[0]
        layout = stream.layout.name if stream.layout is not None else None
        resampler = av.AudioResampler(format="s16p", layout=layout, rate=rate)
        decoded = _Decoded(container, stream)
        chunks = [f.to_ndarray() for frame in decoded for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)] if chunks else []
        declared = _declared_seconds(container, stream)
    if not chunks:
        raise decoded.nothing(path, "an audio stream without samples", fix)
    samples = np.concatenate(chunks, axis=1).astype(np.float32) / 32768.0
    if check_truncation:
        _check_complete(path, samples.shape[1] / rate, declared, "audio", fix)
    return samples


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling along the last axis (:func:`scipy.signal.resample_poly`, Kaiser
    window, beta 5). ``librosa.load(sr=...)`` uses soxr or resampy instead: the results differ by a small
    fraction of a percent near the band edge, not in the bulk of the spectrum."""
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    ratio = Fraction(target_rate, source_rate)
    return resample_poly(samples, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def tile_to(samples: np.ndarray, length: int, *, repeats: int = 1) -> np.ndarray:
    """``np.tile(x, repeats)[:length]``, tiling more often when that is still shorter than ``length``."""
    if len(samples) == 0:
        raise ValueError("cannot tile an empty signal")
    repeats = max(repeats, math.ceil(length / len(samples)))
    return np.tile(samples, repeats)[:length]


def log_stft(samples: np.ndarray, n_fft: int, hop: int, *, pad_mode: str = "reflect") -> np.ndarray:
    """(n_fft // 2 + 1, 1 + len // hop) float32: ``log(|STFT| + 1e-7)`` as librosa computes it.

    ``librosa.stft`` defaults: periodic Hann window of ``n_fft`` samples, frames centred (the signal padded by
    ``n_fft // 2`` on both sides with ``pad_mode``: ``"reflect"`` up to librosa 0.9, ``"constant"`` from 0.10),
    no normalisation.
    """
    # float64: the quiet bins of a float32 STFT carry rounding noise of the loud ones (librosa's own float32
    # result differs from the exact value there by up to a few percent)
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float64))
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft, dtype=torch.float64),
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )
    return torch.log(spec.abs() + 1e-7).float().numpy()


def _kaldi_mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def kaldi_mel_banks(
    num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> torch.Tensor:
    """(num_bins, padded_window // 2 + 1) triangular filters of Kaldi's ``MelBanks``.

    Triangles are evenly spaced and linear on the mel scale ``1127 ln(1 + f / 700)`` between ``low_freq`` and
    ``high_freq`` (<= 0 means Nyquist + high_freq); FFT bin k sits at ``k * sample_rate / padded_window`` and the
    Nyquist bin gets no weight (Kaldi ``feat/mel-computations.cc``).
    """
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(f"mel range {low_freq}..{high} Hz does not fit 0..{nyquist} Hz")
    low_mel, high_mel = (
        _kaldi_mel(torch.tensor(low_freq, dtype=torch.float64)),
        _kaldi_mel(torch.tensor(high, dtype=torch.float64)),
    )
    edges = low_mel + (high_mel - low_mel) / (num_bins + 1) * torch.arange(num_bins + 2, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = _kaldi_mel(sample_rate / padded_window * torch.arange(padded_window // 2, dtype=torch.float64))[None]
    banks = torch.clamp(
        torch.minimum((bin_mel - left) / (centre - left), (right - bin_mel) / (right - centre)), min=0.0
    )
    return torch.nn.functional.pad(banks, (0, 1)).float()


def _kaldi_window(kind: str, size: int) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    if kind == "rectangular":
        return torch.ones(size)
    if kind == "hamming":
        return (0.54 - 0.46 * torch.cos(2 * math.pi * n / (size - 1))).float()
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (size - 1))
    if kind == "hanning":
        return hann.float()
    if kind == "povey":
        return hann.pow(0.85).float()
    raise ValueError(f"window must be povey, hanning, hamming or rectangular, got {kind!r}")


def kaldi_fbank(
    samples: torch.Tensor | np.ndarray,
    sample_rate: float,
    *,
    num_mel_bins: int = 23,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window: str = "povey",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    round_to_power_of_two: bool = True,
) -> torch.Tensor:
    """(frames, num_mel_bins) float32 log mel filterbank energies of a mono signal, as Kaldi's
    ``compute-fbank-feats`` and ``torchaudio.compliance.kaldi.fbank`` compute them with ``dither=0`` and
    ``use_energy=False`` (the keyword defaults are Kaldi's; ``htk_compat`` only moves the energy column).

    Per frame of ``frame_length_ms`` every ``frame_shift_ms`` (``snip_edges``: only frames that fit entirely,
    ``1 + (n - length) // shift`` of them; none when the signal is shorter than one frame): subtract the frame's
    mean (``remove_dc_offset``), pre-emphasise ``x[i] -= preemphasis * x[i-1]`` (``x[-1] = x[0]``), multiply by
    the window (``povey`` = symmetric Hann ** 0.85, ``hanning`` = symmetric Hann), zero-pad to the next power of
    two, take the power spectrum ``|rfft|^2``, apply :func:`kaldi_mel_banks` and take ``log(max(e, eps))`` with
    ``eps`` the float32 machine epsilon. ``samples`` are used as given: Kaldi reads 16-bit integers, torchaudio
    (and the official code) floats in [-1, 1], which shifts every value by ``2 ln 32768``.
    """
    x = torch.as_tensor(samples, dtype=torch.float32)
    if x.dim() != 1:
        raise ValueError(f"kaldi_fbank takes a mono signal (samples,), got shape {tuple(x.shape)}")
    length = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    padded = 1 << (length - 1).bit_length() if round_to_power_of_two else length
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq)
    if x.numel() < length:
        return torch.zeros(0, num_mel_bins)
    frames = x.unfold(0, length, shift)  # (m, length), m = 1 + (n - length) // shift
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - preemphasis * previous
    frames = frames * _kaldi_window(window, length)
    power = torch.fft.rfft(frames, n=padded).abs().pow(2.0)
    energies = power @ banks.T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


def clip_fbank(samples: np.ndarray, sample_rate: int, *, length: int = 1024, num_mel_bins: int = 128) -> np.ndarray:
    """(length, num_mel_bins) float32: the filterbank of the official fbank scripts (MLA ``data/extract_fbank.py``
    ``wav2fbank``, OGM-GE ``data/KineticSound/process_audio.py``).

    ``samples`` are (channels, n) as ``torchaudio.load`` returns them; the mean over all samples of all channels
    is subtracted, then ``torchaudio.compliance.kaldi.fbank(..., htk_compat=True, use_energy=False,
    window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)`` runs on the first channel (its
    ``channel=-1`` default means channel 0) and the frames are zero-padded or cut to ``length``.
    """
    centred = np.atleast_2d(samples) - np.atleast_2d(samples).mean()
    features = kaldi_fbank(centred[0], sample_rate, num_mel_bins=num_mel_bins, window="hanning")
    return pad_or_cut(features, length)


def pad_or_cut(features: torch.Tensor | np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` rows, zero rows appended when there are fewer (the official fbank scripts'
    ``ZeroPad2d`` / slice to ``target_length``)."""
    rows = np.asarray(features, dtype=np.float32)[:length]
    if len(rows) < length:
        rows = np.concatenate([rows, np.zeros((length - len(rows), *rows.shape[1:]), dtype=np.float32)])
    return rows


# --------------------------------------------------------------------------------------------------
# Video frames


def _frame_rate(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def frames_per_second(path: Path, *, fix: str, check_truncation: bool = True) -> list[Any]:
    """The first frame of every second of the first video stream, in time order (``av.VideoFrame`` objects).

    The official frame extraction (``video_preprocessing.py`` of the OGM-GE and MLA repositories) reads every
    frame with OpenCV and saves frame n when ``n % int(fps) == 0``, with fps the stream's average frame rate;
    this keeps the same frames (a 2.5 s clip at 30 fps gives frames 0, 30, 60).
    """
    container = _open(path, fix)  # first: it says how to install PyAV when it is missing
    kept: list[Any] = []
    with container:
        if not container.streams.video:
            raise MissingStream(f"{path} has no video stream; {fix}")
        stream = container.streams.video[0]
        rate = _frame_rate(stream)
        every = int(rate) or 1
        last_time = 0.0
        decoded = _Decoded(container, stream)
        for count, frame in enumerate(decoded):
            if count % every == 0:
                kept.append(frame)
            if frame.time is not None:
                last_time = float(frame.time)
        declared = _declared_seconds(container, stream)
    if not kept:
        raise decoded.nothing(path, "a video stream without frames", fix)
    if check_truncation:
        _check_complete(path, last_time + (1.0 / rate if rate else 0.0), declared, "video", fix)
    return kept


def pick_frames(available: int, count: int) -> list[int]:
    """Positions ``k * (available // count)`` for k < count: the official loaders' choice of ``count`` frames
    among the 1-fps frames (MLA ``dataset/dataset.py`` ``AVDataset``, ``pick_num = 3``; OGM-GE
    ``dataset/dataset.py`` for Kinetics-Sounds; with count 1, the first frame). A clip with fewer than ``count``
    frames repeats its first one, as the official index arithmetic does."""
    if available < 1 or count < 1:
        raise ValueError(f"need at least one frame to pick from and to pick, got {available} and {count}")
    step = available // count
    return [step * k for k in range(count)]


def sampled_frames(path: Path, count: int, size: int, *, fix: str, check_truncation: bool = True) -> np.ndarray:
    """(3, count, size, size) uint8: the frames :func:`pick_frames` chooses among :func:`frames_per_second`,
    each through :func:`rgb_frame`; the ``(C, T, H, W)`` layout of the official loaders' visual tensor."""
    kept = frames_per_second(path, fix=fix, check_truncation=check_truncation)
    return np.stack([rgb_frame(kept[i], size) for i in pick_frames(len(kept), count)], axis=1)


def rgb_frame(frame: Any, size: int) -> np.ndarray:
    """(3, size, size) uint8 RGB: the frame converted to RGB by libswscale, then resized with PIL's bilinear
    filter, what ``transforms.Resize((size, size))`` does to the PIL image of the official loaders' test
    transform."""
    from PIL import Image

    image = frame.to_image() if hasattr(frame, "to_image") else Image.fromarray(np.asarray(frame))
    resized = image.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)


# --------------------------------------------------------------------------------------------------
# Checksums


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_memo(path: Path) -> dict[str, list]:
    try:
        memo = json.loads(Path(path).read_text(encoding="utf-8"))
        return memo["files"] if memo.get("schema") == 1 and isinstance(memo.get("files"), dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def verify_sha256(
    expected: Mapping[Path, tuple[str, int]], memo: Path, progress: Callable[[int], None] | None = None
) -> list[tuple[Path, str]]:
    """(file, why) for every file whose size or SHA-256 differs from ``expected[file] = (sha256, size)``.

    A file is hashed once: its digest is remembered in the JSON file ``memo`` under its absolute path with its
    size and modification time, and reused while both are unchanged. ``progress(done)`` is called after each
    file. The memo is saved even when interrupted, so hashing resumes where it stopped.
    """
    known = _read_memo(memo)
    updated = False
    problems: list[tuple[Path, str]] = []
    try:
        for done, (path, (sha, size)) in enumerate(expected.items(), start=1):
            try:
                stat = Path(path).stat()
            except OSError:
                problems.append((Path(path), "not found"))
                continue
            if stat.st_size != size:
                pointer = (
                    " (a Git LFS pointer: run git lfs pull)" if describe_bad_file(path).startswith("a Git LFS") else ""
                )
                problems.append((Path(path), f"{stat.st_size:,} bytes, expected {size:,}{pointer}"))
                continue
            key = str(Path(path).resolve())
            entry = known.get(key)
            if not (isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]):
                entry = [stat.st_size, stat.st_mtime_ns, sha256_of(path)]
                known[key], updated = entry, True
            if entry[2] != sha.lower():
                problems.append((Path(path), "SHA-256 differs"))
            if progress is not None:
                progress(done)
    finally:
        if updated:
            with contextlib.suppress(OSError):
                atomic_write_text(memo, json.dumps({"schema": 1, "files": known}, sort_keys=True) + "\n")
    return problems
