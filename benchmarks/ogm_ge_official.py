"""One OGM-GE training epoch on CREMA-D-layout data: bench against the official code, on CPU (or, with
``--device cuda``, on a GPU).

    python benchmarks/ogm_ge_official.py [--train-clips 128] [--threads 1,2] [--repeats 1]
        [--official DIR [--official-site DIR] [--official-workers 32]] [--channels-last]
        [--precision fp32,bf16] [--json OUT]
    python benchmarks/ogm_ge_official.py --dry-run        # 2 clips, bench's part only, one step (a smoke test)
    python benchmarks/ogm_ge_official.py --device cuda [--precision bf16] ...   # on a GPU (benchmarks/gpu_check.sh)

**Data.** A CREMA-D-layout dataset is written to a temporary folder with the encoders of
``tests/media_fixtures.py`` (PyAV's FFmpeg, ``wave``): ``AudioWAV/<clip>.wav`` (16 kHz mono 16-bit),
``VideoFlash/<clip>.flv`` (FLV1, 30 fps, 480 x 360 like the real clips, flat colour frames), the SHA-256
manifests and OGM-GE's split files. Clips last 2.2, 2.5 or 2.8 s in turn (CREMA-D averages about 2.5 s), so the
decoding, resampling and STFT costs are those of real clips; flat frames decode and re-encode faster than faces,
which favours the official loader (it decodes a JPEG per clip per epoch), not bench. The FLV files carry no audio
track: neither code reads it. Both codes train on the *same* clips: bench carves 20 % of its training split for
validation, so ``train.csv`` lists ``--train-clips`` clips plus those, and the official ``train.csv`` lists only
the clips bench trains on (with ``--train-clips 128``: two full batches of 64 in both).

**bench.** Preparation (verify, decode, STFT, write the cache) is timed once, cold, into a fresh ``BENCH_CACHE``.
Then each epoch runs in a fresh process (so neither code benefits from a warm oneDNN primitive cache): load the
cell's data from the cache (timed apart), build ``ogm_ge``'s model (seed 0), and time
``bench.loop._train_epoch`` alone: the harness's training loop, batch 64, ``torch.set_num_threads(T)``, in each
precision of ``--precision`` (``fp32,bf16`` times both in one run, against the same official epoch). The
registered ResNet-18 encoders run channels-last already (``CHANNELS_LAST`` in :mod:`bench.nn.encoders`), so
``--channels-last``, which switches them explicitly, only matters for a checkout where that default is off.

**Official code** (``--official DIR``: a checkout of https://github.com/GeWu-Lab/OGM-GE_CVPR2022, e.g. an
export of commit 343dc1d). DIR is copied into the temporary folder and left untouched; in the copy:

1. ``main.py``: ``device = torch.device('cuda:0')`` becomes ``torch.device('cpu')`` and ``model.cuda()`` is
   dropped. ``torch.nn.DataParallel(model, device_ids=[])`` stays: without CUDA it is a pass-through that keeps
   ``model.module``, which ``train_epoch`` reads. Nothing else in ``main.py`` changes unless
   ``--official-workers`` is given (``num_workers=32`` of both DataLoaders becomes that number).
2. ``data/CREMAD/{train,test}.csv`` are replaced by this dataset's lists (``dataset/CramedDataset.py`` reads
   them relative to the working directory).
3. Frames: ``CramedDataset`` reads ``<visual_path>/Image-01-FPS/<clip>/*.jpg``. They are written here as
   ``data/CREMAD/video_preprocessing.py`` (``video2frame_update``, 1 frame kept per second) does: frame n of
   the video, full size, when ``n % int(fps) == 0``, saved as ``{n:05d}.jpg``; decoded with PyAV and encoded
   with PIL at JPEG quality 95 (OpenCV's default) instead of OpenCV, which is not installed.
4. It runs through a small driver written next to ``main.py`` (``_time_official_epoch.py``) that appends
   ``--official-site`` to ``sys.path`` (librosa and tensorboard, which ``main.py`` imports, live outside the
   project's environment), sets ``torch.set_num_threads(T)`` (the official code leaves torch's default, one
   thread per core), wraps ``main.train_epoch`` with a timer and calls ``main.main()`` with the README's
   CREMA-D command: ``--dataset CREMAD --modulation OGM_GE --fusion_method concat --alpha 0.8 --train
   --epochs 1 --batch_size 64`` and the paths of this data. The timed part is ``train_epoch``: the official
   DataLoader (decoding every wav with ``librosa.load``, the STFT, a JPEG and the training augmentation per
   clip, in ``num_workers`` worker processes) and the training steps; the evaluation on the test clips and the
   checkpoint that follow are not timed. The driver also replaces ``main.DataLoader`` by a subclass that adds
   up the time ``train_epoch`` waits for its batches (the loader's share of the epoch); batches are unchanged.

Not the official environment: the official code pins Python 3.7 and an older librosa, whose ``librosa.load``
resampled with resampy's ``kaiser_best``; librosa >= 0.10 uses soxr, which is much faster, so the official
loader's cost measured here is a lower bound. The training steps dominate both epochs anyway.

Timings on a machine shared with other jobs are labelled "busy": runs alternate bench / official (the order
flips every round) so load hits both alike. Per-clip times divide the epoch by the clips trained; the 1,620-clip
figures extrapolate linearly (a longer epoch also amortises the official loader's first-batch wait).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIP_SECONDS = (2.2, 2.5, 2.8)  # CREMA-D clips average about 2.5 s
VIDEO_SIZE = (480, 360)  # width, height of CREMA-D's VideoFlash clips
VIDEO_FPS = 30
AUDIO_RATE = 16000
OFFICIAL_ALPHA = 0.8  # the OGM-GE README's recommendation for CREMA-D
BATCH_SIZE = 64  # main.py --batch_size default, and cremad's default_batch_size
EXTRAPOLATE_TO = 1620
TIMING_TAG = "BENCH_TIMING "


def media_fixtures():
    """A private copy of ``tests/media_fixtures.py``, imported by path (``tests`` is not a package) under its
    own name, so setting its ``FRAME_SIZE`` never changes the module the tests import."""
    name = "_ogm_ge_benchmark_media_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "media_fixtures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


# --------------------------------------------------------------------------------------------------
# The dataset


@dataclass
class Layout:
    root: Path  # data root: root / "cremad" is the dataset
    bench_train: list[str]  # train.csv of the data root (bench carves validation from it)
    trained: list[str]  # the clips bench trains on, in train.csv order (the official train.csv)
    test: list[str]

    @property
    def folder(self) -> Path:
        return self.root / "cremad"


def clip_name(i: int, emotions: Sequence[str], sentences: Sequence[str]) -> str:
    """A CREMA-D file name, unique for i < 91 * 12 * 6: actor 1001.., sentence, emotion, level XX."""
    return f"{1001 + (i // 72) % 91}_{sentences[(i // 6) % len(sentences)]}_{emotions[i % 6]}_XX"


def rows_bench_trains(labels: Sequence[int]) -> list[int]:
    """Rows of a training split that bench keeps for training after carving its validation split."""
    import torch

    from bench.data import validation_rows

    return validation_rows(torch.tensor(list(labels)))[0].tolist()


def clips_for(trained: int) -> int:
    """The smallest training-split size of which bench trains on exactly ``trained`` clips (labels cycle
    through the 6 classes, as :func:`clip_name` names them)."""
    total = trained
    while len(rows_bench_trains([i % 6 for i in range(total)])) != trained:
        total += 1
        if total > 2 * trained + 12:
            raise ValueError(f"no training split trains on exactly {trained} clips")
    return total


def write_dataset(root: Path, train_clips: int, test_clips: int) -> Layout:
    """CREMA-D's layout under ``root / "cremad"``: wavs, FLVs, SHA-256 manifests and OGM-GE's split files."""
    mf = media_fixtures()
    mf.FRAME_SIZE = VIDEO_SIZE  # write_video reads the frame size from this module global
    total = clips_for(train_clips)
    names = [clip_name(i, mf.CREMAD_EMOTIONS, mf.SENTENCES) for i in range(total + test_clips)]
    folder = root / "cremad"
    for i, clip in enumerate(names):
        label, seconds = i % 6, CLIP_SECONDS[i % len(CLIP_SECONDS)]
        mf.write_wav(
            folder / "AudioWAV" / f"{clip}.wav", mf.tone(300 + 150 * label, seconds, AUDIO_RATE, seed=i), AUDIO_RATE
        )
        mf.write_video(
            folder / "VideoFlash" / f"{clip}.flv",
            label=label,
            seconds=seconds,
            fps=VIDEO_FPS,
            container="flv",
            video_codec="flv",
        )
    for sub, suffix in (("AudioWAV", "wav"), ("VideoFlash", "flv")):
        rows = ["path\tsha256\tsize_bytes"]
        for clip in names:
            path = folder / sub / f"{clip}.{suffix}"
            rows.append(f"{sub}/{clip}.{suffix}\t{mf._sha256(path)}\t{path.stat().st_size}")
        (folder / f"lfs_manifest_{sub}.tsv").write_text("\n".join(rows) + "\n")
    train, test = names[:total], names[total:]
    write_split(folder / "splits_ogm_ge" / "train.csv", train)
    write_split(folder / "splits_ogm_ge" / "test.csv", test)
    trained = [train[r] for r in rows_bench_trains([i % 6 for i in range(total)])]
    return Layout(root, train, trained, test)


def write_split(path: Path, clips: Sequence[str]) -> None:
    """OGM-GE's ``data/CREMAD/{train,test}.csv``: rows ``clip,EMO``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{c},{c.split('_')[2]}\n" for c in clips))


# --------------------------------------------------------------------------------------------------
# bench


def prepare_bench(layout: Layout) -> float:
    """Seconds of a cold preparation of ``cremad`` (verify, decode, STFT, write) into ``$BENCH_CACHE``."""
    from bench.datasets.cremad import CREMAD

    started = time.perf_counter()
    CREMAD.prepare(layout.root)
    return time.perf_counter() - started


def bench_epoch(
    data_root: Path, threads: int, *, channels_last: bool = False, device: str = "cpu", precision: str = "fp32"
) -> dict:
    """Time one ``ogm_ge`` training epoch of the harness on ``cremad`` (prepared in ``$BENCH_CACHE``), on
    ``device`` (``--device``), fp32 or under bf16 autocast (``--precision``)."""
    import torch

    torch.set_num_threads(threads)
    from bench.data import cell_data
    from bench.grid import GridRequest, expand
    from bench.loop import _make_optimizer, _train_epoch, autocast_for, build_method, seed_everything
    from bench.nn.backbones import _ResNet18

    started = time.perf_counter()
    request = GridRequest(
        methods="ogm_ge",
        datasets="cremad",
        seeds=(0,),
        missing_rates=(0.0,),
        epochs=1,
        batch_size=BATCH_SIZE,
        data_root=data_root,
        precision=precision,
    )
    (spec,) = expand(request).specs
    method = build_method(spec)
    data = cell_data(spec, data_root=data_root, zero_fill=type(method).zero_fill_missing, device=torch.device(device))
    load_seconds = time.perf_counter() - started
    seed_everything(spec.seed)
    model = method.build(data.description)
    if channels_last:
        for encoder in model.encoders.values():
            if isinstance(encoder, _ResNet18):
                encoder.channels_last = True
                encoder.cnn = encoder.cnn.to(memory_format=torch.channels_last)
    model = model.to(device)
    optimizer = _make_optimizer(method, model)
    generator = torch.Generator().manual_seed(spec.seed)
    started = time.perf_counter()
    steps, _ = _train_epoch(
        method, model, optimizer, data, spec, 0, generator, 0, autocast=autocast_for(precision, torch.device(device))
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {
        "code": "bench"
        + (" channels-last" if channels_last else "")
        + (f" {precision}" if precision != "fp32" else ""),
        "device": device,
        "threads": torch.get_num_threads(),
        "epoch_seconds": time.perf_counter() - started,
        "clips": len(data.train),
        "steps": steps,
        "load_seconds": load_seconds,
    }


def bench_epoch_subprocess(
    layout: Layout, cache: Path, threads: int, channels_last: bool, device: str = "cpu", precision: str = "fp32"
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--bench-epoch",
        str(layout.root),
        "--threads",
        str(threads),
        "--device",
        device,
        "--precision",
        precision,
    ]
    env = {**os.environ, "BENCH_CACHE": str(cache)}
    return _run_timed(command + (["--channels-last"] if channels_last else []), cwd=REPO, env=env)


def _run_timed(command: list[str], *, cwd: Path, env: dict) -> dict:
    """Run ``command`` and return the JSON it prints after :data:`TIMING_TAG`; its output on failure."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(TIMING_TAG):
            return json.loads(line[len(TIMING_TAG) :])
    raise RuntimeError(
        f"{' '.join(command[:3])} ... exited {done.returncode} without a timing:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


# --------------------------------------------------------------------------------------------------
# The official code


def extract_official_frames(flv: Path, out_dir: Path) -> list[str]:
    """Frames as ``data/CREMAD/video_preprocessing.py`` ``video2frame_update`` saves them with one frame kept
    per second: frame n (full size) when ``n % int(fps) == 0``, as ``{n:05d}.jpg``. Returns the file names."""
    import av

    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    with av.open(str(flv)) as container:
        stream = container.streams.video[0]
        every = int(stream.average_rate) or 1
        for n, frame in enumerate(container.decode(stream)):
            if n % every == 0:
                names.append(f"{n:05d}.jpg")
                frame.to_image().save(out_dir / names[-1], quality=95)  # OpenCV's imencode default quality
    return names


#: (text in the official main.py, its replacement): the only edits, each must match exactly once.
MAIN_PY_EDITS = (
    ("device = torch.device('cuda:0')", "device = torch.device('cpu')"),
    ("    model.cuda()\n", ""),
)

DRIVER = '''"""Written by bench's benchmarks/ogm_ge_official.py: times main.train_epoch of the official code, and
within it the time spent waiting for the DataLoader's batches."""
import json, sys, time
site, threads, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if site:
    sys.path.append(site)
import torch
torch.set_num_threads(threads)
import main
timed = {"epoch": [], "data_wait": 0.0, "recording": False}

class WaitTimedLoader(main.DataLoader):
    def __iter__(self):
        batches = super().__iter__()
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                if timed["recording"]:
                    timed["data_wait"] += time.perf_counter() - started
            yield batch

train_epoch = main.train_epoch
def timed_train_epoch(*args, **kwargs):
    timed["recording"] = True
    started = time.perf_counter()
    out = train_epoch(*args, **kwargs)
    timed["epoch"].append(time.perf_counter() - started)
    timed["recording"] = False
    return out

main.DataLoader = WaitTimedLoader
main.train_epoch = timed_train_epoch
sys.argv = ["main.py", *argv]
main.main()
print("@TAG@" + json.dumps({"epoch_seconds": timed["epoch"][0], "data_wait_seconds": timed["data_wait"],
                            "threads": torch.get_num_threads()}))
'''.replace("@TAG@", TIMING_TAG)


def patched_main(text: str, workers: int | None, device: str = "cpu") -> str:
    """The official ``main.py`` with :data:`MAIN_PY_EDITS` (and ``num_workers`` when ``workers`` is given); on
    a CUDA ``device`` the official code keeps its own ``cuda:0`` (only the worker count may change)."""
    edits = list(MAIN_PY_EDITS) if not device.startswith("cuda") else []
    if workers is not None:
        edits.append(("num_workers=32", f"num_workers={workers}"))
    for old, new in edits:
        count = text.count(old)
        if count == 0 or (count != 1 and not old.startswith("num_workers")):
            raise SystemExit(
                f"the official main.py has {count} copies of {old!r}; this benchmark knows commit "
                "343dc1d of GeWu-Lab/OGM-GE_CVPR2022"
            )
        text = text.replace(old, new)
    return text


def prepare_official(
    official: Path, work: Path, layout: Layout, workers: int | None, device: str = "cpu"
) -> tuple[Path, Path, float]:
    """Copy the official code into ``work``, adapt it (see the module docstring), write its split lists and
    frames. Returns (code copy, frames root, seconds of the frame extraction)."""
    if not (official / "main.py").is_file() or not (official / "dataset" / "CramedDataset.py").is_file():
        raise SystemExit(f"{official} is not a checkout of GeWu-Lab/OGM-GE_CVPR2022 (no main.py / dataset/)")
    code = work / "OGM-GE_CVPR2022"
    shutil.copytree(official, code, ignore=shutil.ignore_patterns(".git"))
    main_py = code / "main.py"
    main_py.write_text(patched_main(main_py.read_text(), workers, device))
    (code / "_time_official_epoch.py").write_text(DRIVER)
    write_split(code / "data" / "CREMAD" / "train.csv", layout.trained)
    write_split(code / "data" / "CREMAD" / "test.csv", layout.test)
    visual = work / "official_visual"
    started = time.perf_counter()
    for clip in layout.trained + layout.test:
        extract_official_frames(layout.folder / "VideoFlash" / f"{clip}.flv", visual / "Image-01-FPS" / clip)
    return code, visual, time.perf_counter() - started


def official_epoch(code: Path, visual: Path, layout: Layout, threads: int, site: str, python: str) -> dict:
    argv = [
        "--dataset",
        "CREMAD",
        "--modulation",
        "OGM_GE",
        "--fusion_method",
        "concat",
        "--alpha",
        str(OFFICIAL_ALPHA),
        "--train",
        "--epochs",
        "1",
        "--batch_size",
        str(BATCH_SIZE),
        "--audio_path",
        str(layout.folder / "AudioWAV"),
        "--visual_path",
        str(visual),
        "--ckpt_path",
        str(code / "ckpt_bench"),
    ]
    timing = _run_timed([python, "_time_official_epoch.py", site, str(threads), *argv], cwd=code, env=dict(os.environ))
    return {"code": "official", **timing, "clips": len(layout.trained), "steps": -(-len(layout.trained) // BATCH_SIZE)}


# --------------------------------------------------------------------------------------------------
# Report


def per_clip_lines(runs: list[dict]) -> list[str]:
    lines = []
    for run in runs:
        per_clip = run["epoch_seconds"] / run["clips"]
        lines.append(
            f"  {run['code']:20s} {run['threads']} thread(s): {run['epoch_seconds']:8.1f} s/epoch for "
            f"{run['clips']} clips ({run['steps']} steps) = {per_clip:6.3f} s/clip -> "
            f"{per_clip * EXTRAPOLATE_TO:7.0f} s per {EXTRAPOLATE_TO:,}-clip epoch"
            + (f"; {run['data_wait_seconds']:.1f} s of it waiting for batches" if "data_wait_seconds" in run else "")
        )
    return lines


def ratio_lines(runs: list[dict]) -> list[str]:
    lines = []
    for threads in sorted({r["threads"] for r in runs}):
        per_clip = {}
        for run in runs:
            if run["threads"] == threads:
                per_clip.setdefault(run["code"], []).append(run["epoch_seconds"] / run["clips"])
        if "official" not in per_clip:
            continue
        official = float(np.median(per_clip["official"]))
        for code, values in per_clip.items():
            if code != "official":
                lines.append(f"  {threads} thread(s): {code} / official per clip = {np.median(values) / official:.3f}")
    return lines


def flops_per_clip() -> float:
    """Forward + backward FLOPs of one clip through ogm_ge's model (two ResNet-18s and the concat head)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from bench.datasets.cremad import CREMAD
    from bench.protocol import DataDescription
    from bench.registry import default_method

    model = default_method("ogm_ge").build(DataDescription(CREMAD.modalities(), 6, 2))
    inputs = {
        "audio": torch.randn(2, 1, 257, 188),
        "visual": torch.randint(0, 255, (2, 3, 1, 224, 224), dtype=torch.uint8),
    }
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(inputs)[0], torch.tensor([0, 1])).backward()
    return counter.get_total_flops() / 2


def matmul_gflops(threads: int, size: int = 1024, repeats: int = 8) -> float:
    """fp32 matrix-multiply throughput now, on ``threads`` threads: what this CPU (and its current load) gives
    the convolutions at best."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    seconds = time.perf_counter() - started
    torch.set_num_threads(previous)
    return 2 * size**3 * repeats / seconds / 1e9


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-clips", type=int, default=128, help="clips bench and the official code train on")
    p.add_argument("--test-clips", type=int, default=6)
    p.add_argument("--threads", default="1,2", help="torch threads of the runs, comma-separated")
    p.add_argument("--repeats", type=int, default=1, help="rounds of (bench, official) per thread count")
    p.add_argument("--official", type=Path, help="a checkout of GeWu-Lab/OGM-GE_CVPR2022 (copied, never edited)")
    p.add_argument(
        "--official-site",
        default="",
        help="a site-packages folder with librosa and tensorboard, appended to the official run's sys.path",
    )
    p.add_argument("--official-python", default=sys.executable, help="the interpreter of the official run")
    p.add_argument("--official-workers", type=int, help="replace main.py's num_workers=32 (default: keep it)")
    p.add_argument("--channels-last", action="store_true", help="also time bench with channels-last ResNets")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default) or cuda[:N]: bench's epoch there, and the "
        "official code on its own cuda:0 (unedited) when cuda",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        help="bench's epoch in fp32 and/or under bf16 autocast, comma-separated, e.g. fp32,bf16 "
        "(the official code has no bf16: it runs fp32)",
    )
    p.add_argument("--json", type=Path, help="write the runs to this file")
    p.add_argument("--dry-run", action="store_true", help="2 clips, bench only, in this process (a smoke test)")
    p.add_argument("--bench-epoch", type=Path, help=argparse.SUPPRESS)  # internal: one epoch in a child process
    args = p.parse_args(argv)
    args.threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    args.precisions = [x.strip() for x in str(args.precision).split(",") if x.strip()]
    if not args.precisions or set(args.precisions) - {"fp32", "bf16"}:
        p.error(f"--precision takes fp32, bf16 or both comma-separated, not {args.precision!r}")
    if args.train_clips < 2 or args.test_clips < 1 or not args.threads or min(args.threads) < 1:
        p.error("need --train-clips >= 2, --test-clips >= 1 and thread counts >= 1")
    return args


def dry_run(work: Path) -> dict:
    """Write 2 training clips (+1 test clip), prepare them and run bench's epoch (one step) in this process."""
    layout = write_dataset(work / "data", 2, 1)
    os.environ["BENCH_CACHE"] = str(work / "cache")
    prepare_seconds = prepare_bench(layout)
    return {"prepare_seconds": prepare_seconds, **bench_epoch(layout.root, 1)}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bench_epoch is not None:
        print(
            TIMING_TAG
            + json.dumps(
                bench_epoch(
                    args.bench_epoch,
                    args.threads[0],
                    channels_last=args.channels_last,
                    device=args.device,
                    precision=args.precisions[0],
                )
            )
        )
        return
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ogm-ge-official-") as tmp:
        work = Path(tmp)
        if args.dry_run:
            print(json.dumps(dry_run(work)))
            return
        measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> None:
    started = time.perf_counter()
    layout = write_dataset(work / "data", args.train_clips, args.test_clips)
    print(
        f"wrote {len(layout.bench_train)} training + {len(layout.test)} test clips in "
        f"{time.perf_counter() - started:.1f} s; both codes train on {len(layout.trained)}",
        flush=True,
    )
    cache = work / "cache"
    os.environ["BENCH_CACHE"] = str(cache)
    prepare_seconds = prepare_bench(layout)
    clips = len(layout.bench_train) + len(layout.test)
    print(
        f"bench preparation (cold: verify, decode, STFT, write): {prepare_seconds:.1f} s for {clips} clips = "
        f"{prepare_seconds / clips:.3f} s/clip",
        flush=True,
    )
    official = None
    if args.official is not None:
        official = prepare_official(args.official.resolve(), work, layout, args.official_workers, args.device)
        print(
            f"official frame extraction (JPEGs): {official[2]:.1f} s for "
            f"{len(layout.trained) + len(layout.test)} clips",
            flush=True,
        )
    variants = [False, True] if args.channels_last else [False]
    runs = []
    for round_ in range(args.repeats):
        for k, threads in enumerate(args.threads):
            order = ["bench", "official"] if (round_ + k) % 2 == 0 else ["official", "bench"]
            for code in order:
                if code == "official" and official is not None:
                    runs.append(
                        official_epoch(
                            official[0], official[1], layout, threads, args.official_site, args.official_python
                        )
                    )
                elif code == "bench":
                    runs += [
                        bench_epoch_subprocess(layout, cache, threads, cl, args.device, precision)
                        for precision in args.precisions
                        for cl in variants
                    ]
                else:
                    continue
                bench_runs = len(variants) * len(args.precisions)
                print("\n".join(per_clip_lines(runs[-(bench_runs if code == "bench" else 1) :])), flush=True)
    flops = flops_per_clip()
    where = f"CPU ({os.cpu_count()} cores)" if args.device == "cpu" else args.device
    precisions = "/".join(args.precisions)
    report = ["", f"one OGM-GE epoch, batch {BATCH_SIZE}, bench {precisions} (official fp32), {where}"]
    report += per_clip_lines(runs) + ratio_lines(runs)
    best = min(r["epoch_seconds"] / r["clips"] for r in runs)
    report.append(
        f"  model: {flops / 1e9:.1f} GFLOP per clip (forward + backward); the fastest run did "
        f"{flops / best / 1e9:.0f} GFLOP/s; a {EXTRAPOLATE_TO:,}-clip epoch in 60 s needs "
        f"{flops * EXTRAPOLATE_TO / 60 / 1e9:.0f} GFLOP/s"
    )
    report.append(
        "  fp32 matmul now: " + ", ".join(f"{matmul_gflops(t):.0f} GFLOP/s on {t} thread(s)" for t in args.threads)
    )
    print("\n".join(report))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "prepare_seconds": prepare_seconds,
                    "flops_per_clip": flops,
                    "official_frames_seconds": official[2] if official else None,
                    "runs": runs,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
