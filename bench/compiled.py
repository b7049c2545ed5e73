"""The producer's hot path compiled with mypyc, against the pure-Python one (issue 24, goal 1).

    python bench/compiled.py [--rounds 3] [--records 500000] [--partitions 1,16] [--acks leader]

An experiment, not a shipped build: the package is copied to a temporary directory, the
modules ``send()`` runs through (:data:`HOT`) are compiled there with mypyc (it comes with
mypy, a dev dependency; a C compiler is needed), and ``bench/produce_many.py --apis send`` runs
once against each tree per round, interleaved (pure, compiled, pure, ...). The tree a run
uses is chosen by ``PYTHONPATH``, for the broker it starts too (whose code is the same
pure Python in both). Prints each run's table and the per-round ratio of records/s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "tidelog"
HOT = (
    "tidelog/wire/batch_builder.py",
    "tidelog/client/accumulator.py",
    "tidelog/client/batch.py",
    "tidelog/client/producer.py",
)
"""``Producer.send()``, the accumulator, the record future and the batch build: 96% of the
client's samples in the ``send()`` profile (docs/BENCHMARKS.md)."""
ROW = re.compile(r"│\s*send\s*│\s*(\w+)\s*│\s*(\d+)\s*│\s*([\d,]+)")


def compile_copy(root: Path) -> None:
    """Copy the package under ``root`` and compile :data:`HOT` there in place."""
    shutil.copytree(PACKAGE, root / "tidelog", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "mypyc", *HOT],
        cwd=root,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )


def run(pythonpath: str, args: argparse.Namespace) -> dict[tuple[str, int], float]:
    """One ``produce_many.py --apis send`` run; records/s per (acks, partitions)."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "produce_many.py"),
            "--apis=send",
            "--runs=1",
            f"--records={args.records}",
            f"--partitions={args.partitions}",
            f"--acks={args.acks}",
        ],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    return {(a, int(p)): float(r.replace(",", "")) for a, p, r in ROW.findall(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--partitions", default="1,16")
    parser.add_argument("--acks", default="leader")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidelog-mypyc-") as tmp:
        compile_copy(Path(tmp))
        trees = {"pure": str(PACKAGE.parent), "compiled": tmp}
        results: dict[str, list[dict[tuple[str, int], float]]] = {k: [] for k in trees}
        for _ in range(args.rounds):
            for name, path in trees.items():
                results[name].append(run(path, args))
    for case in sorted(results["pure"][0]):
        pure = [r[case] for r in results["pure"]]
        fast = [r[case] for r in results["compiled"]]
        ratios = ", ".join(f"{c / p:.2f}" for p, c in zip(pure, fast, strict=True))
        print(
            f"send(), acks={case[0]}, {case[1]} partition(s): pure "
            f"{', '.join(f'{p:,.0f}' for p in pure)}; compiled "
            f"{', '.join(f'{c:,.0f}' for c in fast)} records/s; compiled / pure {ratios}"
        )


if __name__ == "__main__":
    main()
