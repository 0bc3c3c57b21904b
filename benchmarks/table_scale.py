"""Time ``bench table`` over N records: does tabulating stay fast at lab scale (goal: 100,000 records <= 10 s)?

The records are SYNTHETIC: copies of the committed records (``git ls-files results/records``) with the seed
moved by 1000 per copy round (so each is its own cell, and the cells of one round still pair across methods
as real seeds do), every metric jittered by a seeded 1% and re-sealed; each one says so in
``environment.synthetic``. They are written to a temporary folder, which is deleted afterwards; nothing of
them is ever committed.

The records are left to settle for a few seconds first (not timed), as a lab's records have: the records index
does not keep files changed in the last 3 s (bench.record_index), so without the pause the first run would leave
the last-written records out of the index and the warm run would read them again. Timed, each as the whole
command in a fresh process with a fresh ``BENCH_CACHE`` of its own: ``bench table``
(writes the tables and figures; the first run over a folder also builds the records index, bench.store, and
draws every figure), ``bench table`` again (index warm; figures whose plotted values did not change come from
the figure cache, bench.tables.plots), ``bench table --check`` (must pass: the tables the second run wrote
match the records), and ``bench table`` after ``--grow`` more records were added (new files indexed, the
figures of the settings they changed redrawn). Prints the wall and CPU times; the last line is ``table: N
records in S s`` with S the warm ``bench table`` run.
Run: python benchmarks/table_scale.py --records 100000 [--grow 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.record_index import SETTLED_NS  # noqa: E402
from bench.spec import CellSpec, canonical_json  # noqa: E402

MARK = "benchmarks/table_scale.py: synthetic copy of a committed record, not a trained cell"


def templates() -> list[dict]:
    listed = subprocess.run(
        ["git", "ls-files", "results/records"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    found = [json.loads((REPO / p).read_text()) for p in sorted(listed) if p.endswith(".json")]
    if not found:
        raise SystemExit("no committed records under results/records to copy")
    return found


def _jitter(value, rng: random.Random):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        moved = value * (1 + 0.01 * rng.gauss(0, 1))
        return min(max(moved, 0.0), 1.0) if 0.0 <= value <= 1.0 else moved
    if isinstance(value, dict):
        return {k: (v if k.startswith("num_") or k == "epochs_run" else _jitter(v, rng)) for k, v in value.items()}
    if isinstance(value, list):
        return [_jitter(v, rng) for v in value]
    return value


def synthetic_record(template: dict, round_: int, rng: random.Random) -> dict:
    record = copy.deepcopy({k: v for k, v in template.items() if k != "checksum"})
    record["spec"]["seed"] = template["spec"]["seed"] + 1000 * round_
    record["key"] = CellSpec.from_dict(record["spec"]).key
    if record.get("metrics") is not None:
        record["metrics"] = _jitter(record["metrics"], rng)
    record["environment"] = {**record["environment"], "synthetic": MARK}
    record["checksum"] = hashlib.sha256(canonical_json(record).encode()).hexdigest()
    return record


def build(results: Path, count: int, start: int = 0) -> None:
    """Write synthetic records ``start`` to ``start + count - 1`` (copy round and template from the index)."""
    base = templates()
    rng = random.Random(start)
    for i in range(start, start + count):
        round_, index = divmod(i, len(base))
        record = synthetic_record(base[index], round_, rng)
        spec = record["spec"]
        path = results / "records" / spec["dataset"] / spec["method"] / f"{record['key']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def timed_table(results: Path, cache: Path, *extra: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``bench table`` command, with its own ``BENCH_CACHE`` (records index
    and figure cache), so the first run is cold whatever ran before."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "table", "--results", str(results), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_CACHE": str(cache)},
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench table {' '.join(extra)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keep", help="build the records in this folder and keep it (default: a temporary one)")
    parser.add_argument(
        "--grow", type=int, default=500, help="records added after the warm run, then timed again (default 500)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-table-scale-") as scratch:
        results = Path(args.keep) if args.keep else Path(scratch) / "results"
        cache = Path(scratch) / "cache"
        started = time.perf_counter()
        build(results, args.records)
        print(f"built {args.records} synthetic records in {time.perf_counter() - started:.1f} s under {results}")
        # A lab's records were written long before it tabulates them; files younger than this are read but not
        # indexed (bench.record_index: "racily clean"), which would make the warm run read them again.
        time.sleep(SETTLED_NS / 1e9)
        cold = timed_table(results, cache)
        warm = timed_table(results, cache)
        check = timed_table(results, cache, "--check")
        print(
            f"bench table: first {cold[0]:.1f} s (CPU {cold[1]:.1f} s; builds the records index and draws every "
            f"figure), again {warm[0]:.1f} s (CPU {warm[1]:.1f} s; figures unchanged, from the figure cache); "
            f"--check {check[0]:.1f} s (CPU {check[1]:.1f} s; passed)"
        )
        build(results, args.grow, start=args.records)
        grown = timed_table(results, cache)
        print(
            f"after adding {args.grow} records: {grown[0]:.1f} s (CPU {grown[1]:.1f} s; indexes them and redraws "
            "the figures whose values changed)"
        )
        print(f"table: {args.records} records in {warm[0]:.1f} s")


if __name__ == "__main__":
    main()
