"""Epoch time of avmnist training from the prepared cache versus decoding the audio on the fly.

    BENCH_DATA=../shared/data python benchmarks/avmnist_cache.py [--epochs 2] [--batch-size 16] [--threads 1]

Three measurements, all on one torch thread by default (as ``bench run``):

* preparation: decode the 3,000 wavs and 4 IDX files, compute log-mel spectrograms and the PCA-degraded
  images, write the cache (into a fresh temporary ``BENCH_CACHE``, so it is always a cold preparation);
* cached epoch: one training epoch of late fusion (the harness's CNN encoders) on the cached tensors;
* on-the-fly epoch: the same epoch, but every batch reads its wav files and computes their spectrograms
  (``read_wav`` + ``log_mel`` + the same standardisation), as a ``Dataset.__getitem__`` without a cache
  would. Images come from the cache in both, so the difference is the audio decoding alone.

It also times the data path alone (no model), which is what the cache removes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets.avmnist import AVMNIST, RECORDINGS, log_mel, read_wav
from bench.methods.late_fusion import LateFusion
from bench.protocol import DataDescription


def _batches(n: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _on_the_fly_audio(paths: list[Path], rows: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    waves = [read_wav(paths[int(r)]) for r in rows]
    return torch.from_numpy((log_mel(waves, AVMNIST.audio) - mean) / std).unsqueeze(1)


def _epoch(model, optimizer, audio_of, images, labels, batch_size: int, seed: int, train: bool) -> float:
    started = time.perf_counter()
    model.train()
    for rows in _batches(len(labels), batch_size, seed):
        audio = audio_of(rows)
        if not train:
            continue
        logits, _ = model({"audio": audio, "image": images[rows]})
        loss = F.cross_entropy(logits, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("BENCH_DATA", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=AVMNIST.info.default_batch_size)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data_root)

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        os.environ["BENCH_CACHE"] = cache
        started = time.perf_counter()
        directory = AVMNIST.prepare(root)
        prepare_seconds = time.perf_counter() - started
        started = time.perf_counter()
        data = AVMNIST.load(root)
        load_seconds = time.perf_counter() - started
        from bench.media.cache import read_manifest

        manifest = read_manifest(directory)
    stats = manifest["audio_standardisation"]
    paths = [root / RECORDINGS / name for name in manifest["recordings"]["train"]]
    audio, images, labels = data.train.inputs["audio"], data.train.inputs["image"], data.train.labels

    def cached(rows: torch.Tensor) -> torch.Tensor:
        return audio[rows]

    def on_the_fly(rows: torch.Tensor) -> torch.Tensor:
        return _on_the_fly_audio(paths, rows, stats["mean"], stats["std"])

    assert torch.allclose(on_the_fly(torch.arange(8)), cached(torch.arange(8)), atol=1e-4)
    description = DataDescription(data.modalities, AVMNIST.info.num_classes, len(labels))
    results: dict[str, list[float]] = {}
    for train in (False, True):
        for name, audio_of in (("cached", cached), ("on-the-fly", on_the_fly)):
            torch.manual_seed(0)
            model = LateFusion().build(description)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            key = f"{'epoch' if train else 'data only'}, {name}"
            results[key] = [
                _epoch(model, optimizer, audio_of, images, labels, args.batch_size, e, train)
                for e in range(args.epochs)
            ]

    print(
        f"avmnist: {len(labels)} training pairs, batch {args.batch_size}, {torch.get_num_threads()} thread(s), "
        f"{args.epochs} epoch(s) each"
    )
    print(
        f"preparation (cold, decode + spectrograms + PCA + write): {prepare_seconds:.2f} s; "
        f"load from cache: {load_seconds:.2f} s"
    )
    for key, times in results.items():
        print(f"{key:24s} {np.mean(times):7.3f} s/epoch  ({', '.join(f'{t:.3f}' for t in times)})")
    for what in ("data only", "epoch"):
        fly, cache_t = np.mean(results[f"{what}, on-the-fly"]), np.mean(results[f"{what}, cached"])
        print(f"{what}: cached / on-the-fly = {cache_t / fly:.3f}  (on-the-fly is {fly / cache_t:.1f}x slower)")


if __name__ == "__main__":
    main()
