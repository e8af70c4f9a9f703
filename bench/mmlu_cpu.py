"""CPU smoke benchmark (``make bench``): the MMLU scoring comparison of mmlu_gpu.py on a tiny Llama.

Writes ``bench/results/mmlu_cpu.json``; the numbers only show that both scorers run and agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmlu_gpu import ROOT, main  # noqa: E402

if __name__ == "__main__":
    main(["--tiny", "--out", str(ROOT / "bench" / "results" / "mmlu_cpu.json"), *sys.argv[1:]])
