"""Files shipped inside the package (``iaa_eval/data``): the one place that knows where they are.

Found through :mod:`importlib.resources`, so an installed wheel reads the same files as a
checkout; nothing reaches out of the package (``Path(__file__).parents[...]``) to the repository.
pip installs packages unpacked, so each resource is a real path that lm-eval and globbing can use.
Users pass their own files with flags (``--suite FILE``, ``--thresholds FILE``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DATA = Path(str(files("iaa_eval").joinpath("data")))
TASKS = DATA / "tasks"  # lm-eval task configs: one folder per text benchmark (mmlu, ceval)
SUITES = TASKS / "suites"  # iaa-eval suites (model + task lists)
BASELINES = DATA / "baselines"
GATE_THRESHOLDS = BASELINES / "gate.yaml"  # the project's own gate on the mini-world run
PAPER_BASELINES = BASELINES / "iaa_paper.json"  # the IAA paper's published numbers
MINIWORLD_REFERENCE = BASELINES / "miniworld.json"  # what the shipped mini-world trio scores
MINIWORLD_ASSETS = Path(str(files("iaa_eval").joinpath("miniworld", "assets")))  # trio, data
