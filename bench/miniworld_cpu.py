"""Wall time of the forgetting suite on the embedded mini-world, on this machine's CPU.

A fresh run (empty cache) in a temporary folder, the way `make run` does it after install:

    python bench/miniworld_cpu.py --out bench/results/miniworld_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    """Run the suite once and report its wall time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "iaa_eval", "run", "--suite", "forgetting", "--output-path", tmp,
                        "--run-id", "bench"], check=True, cwd=REPO, capture_output=True)
        wall = time.perf_counter() - start
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "suite": "forgetting (mini-world: 3 models x 5 tasks)", "wall_s": round(wall, 1)}
    print(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
