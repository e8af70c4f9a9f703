"""A built wheel, installed into a fresh venv that cannot see the checkout, runs the forgetting
suite and the gate from a directory outside the repository: everything the package reads (task
configs, suites, baselines, the mini-world) ships inside it as package data.

The fresh venv has no dependencies of its own: a ``.pth`` file points at this interpreter's
site-packages, so torch and friends resolve from there. A plain path line in a ``.pth`` does not
process the ``.pth`` files of that directory, so an editable install of iaa-eval there stays
invisible. The wheel is built without build isolation (no index needed): torch requires
setuptools, so it is present wherever the tests can run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, f"{argv}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_runs_a_suite_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    source = tmp_path / "source"  # built from a copy: the build writes build/ and *.egg-info
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "iaa_eval", source / "iaa_eval",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q",
          "-w", tmp_path / "wheels"], tmp_path, env)
    (wheel,) = (tmp_path / "wheels").glob("iaa_eval-*.whl")

    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", fresh], tmp_path, env)
    python = fresh / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        tmp_path, env).stdout.strip())
    (purelib / "_iaa_eval_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-compile",
          "-q", wheel], tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import iaa_eval; print(iaa_eval.__file__)"], elsewhere, env)
    assert Path(where.stdout.strip()).is_relative_to(purelib), where.stdout
    runs = tmp_path / "runs"
    _run([fresh / "bin" / "iaa-eval", "run", "--suite", "forgetting", "--limit", "2",
          "--output-path", runs, "--run-id", "w"], elsewhere, env)
    results = json.loads((runs / "w" / "results.json").read_text())
    assert set(results["results"]) == {"base", "llava", "iaa"}
    assert all(set(tasks) == {"mmlu", "ceval", "mme", "mmbench_en", "vqav2"}
               for tasks in results["results"].values())
    gate = subprocess.run([fresh / "bin" / "iaa-eval", "gate", runs / "w"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, check=False)  # the shipped gate.yaml
    assert gate.returncode in (0, 1), gate.stdout + gate.stderr  # 2: the thresholds were unusable
