"""How long the ``segmerge`` command takes to start, and what it imports on the plan/merge path.

Prints medians of ``--repeats`` runs of each command, measured alternating (one run of each
in turn, so background load hits all of them alike), whole process, wall clock; and the
heavy modules a plain ``import segmerge.cli.app`` loads. It asserts nothing. Run it on an idle
machine:

    .venv/bin/python benchmarks/cli_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HEAVY = ("torch", "transformers", "scipy", "matplotlib", "cityscapesscripts", "PIL", "segmerge_bench.synthetic")


def tiny_inputs(folder: Path) -> list[str]:
    paths = []
    for i in (1, 2):
        torch.manual_seed(i)
        state = {f"block.{k}.fc.weight": torch.randn(64, 64) for k in range(8)}
        torch.save(state, folder / f"{i}.pth")
        paths.append(str(folder / f"{i}.pth"))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("segmerge"))
    with tempfile.TemporaryDirectory() as scratch:
        a, b = tiny_inputs(Path(scratch))
        out = str(Path(scratch) / "m.pth")
        commands = {
            "python -c 'import torch' (the floor)": [sys.executable, "-c", "import torch"],
            "segmerge --help": [exe, "--help"],
            "segmerge plan A B": [exe, "plan", a, b],
            "segmerge merge A B -o M (2 x 8 small tensors)": [exe, "merge", a, b, "-o", out, "--overwrite"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for _ in range(args.repeats):
            for name, command in commands.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, env=env)
                times[name].append(time.perf_counter() - start)
    floor = statistics.median(times[next(iter(commands))])
    load = os.getloadavg()[0]
    print(f"median of {args.repeats} alternating runs, whole process, wall clock (load average {load:.2f})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<48} {median:6.2f} s  ({median / floor:.2f}x the torch import)")
    code = f"import sys, segmerge.cli.app; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    print(f"heavy modules loaded by `import segmerge.cli.app`: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
