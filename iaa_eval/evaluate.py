"""The model x task matrix: load each model once, run its tasks, write results.

Models are evaluated one at a time (bounded memory). Each task gets its own request path
(:mod:`iaa_eval.runner.requests`) over the run's request cache, and the run records what the path
counted. A multimodal task on a model without eyes runs *blind* (the question without its image):
the floor for multimodal gain. Text results are shared between models whose text fingerprints
match (IAA's text workflow *is* its base model), so the forgetting suite pays for two text
evaluations, not three.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from iaa_eval.errors import NonFiniteOutput, RunInterrupted, UsageError
from iaa_eval.miniworld import ASSETS as MINIWORLD_ASSETS
from iaa_eval.models.base import EvalModel, ModelSpec
from iaa_eval.names import path_name
from iaa_eval.rundir import (
    SCHEMA_VERSION,
    TaskResult,
    recorded_results,
    write_results,
    write_samples,
)
from iaa_eval.runner.cache import RequestCache
from iaa_eval.runner.distributed import Shards
from iaa_eval.runner.requests import RequestPath
from iaa_eval.tasks import TASKS, Task, TaskContext, TaskOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """A task to run and the key its results are stored under."""

    name: str
    options: TaskOptions = field(default_factory=TaskOptions)
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.alias is None:
            path_name(self.name, "task name")
        else:
            path_name(self.alias, "task alias")

    @property
    def key(self) -> str:
        """The name results, samples and reports use."""
        return self.alias or self.name


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's answers (and so its id)."""

    models: tuple[ModelSpec, ...]
    tasks: tuple[TaskSpec, ...]
    run_dir: Path
    log_samples: bool = True
    suite: str | None = None
    # --vlm: where the base came from, tokenizer check (pairing.py)
    pairing: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for results.json."""
        data = dataclasses.asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


def package_versions() -> dict[str, str]:
    """Versions of what shapes the numbers."""
    versions = {"python": platform.python_version()}
    for name in ("iaa-eval", "torch", "transformers", "lm_eval", "datasets", "tokenizers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def data_source(task: Task, data_dir: Path | None) -> str:
    """``TaskResult.source``: the task's hub dataset, the shipped mini-world's data or a folder."""
    if data_dir is None:
        return f"hub:{task.hub}"
    folder = Path(data_dir).resolve()
    if folder.is_relative_to(MINIWORLD_ASSETS.resolve()):
        return f"miniworld:{folder.relative_to(MINIWORLD_ASSETS.resolve()).as_posix()}"
    return f"local:{folder}"


def _run_task(
    model: EvalModel, spec: TaskSpec, cache: RequestCache, label: str, shards: Shards
) -> TaskResult:
    task = TASKS.get(spec.name)
    blind = task.modality == "image" and not model.supports_images
    path = RequestPath(cache, shards, label)
    ctx = TaskContext(model=model, options=spec.options, request_path=path, blind=blind)
    start = time.perf_counter()
    try:
        result = task.run(ctx)
    except NonFiniteOutput as exc:
        model_spec = model.spec
        raise NonFiniteOutput(
            f"model {model_spec.name!r} ({model_spec.kind}:{model_spec.path}) "
            f"on task {spec.key!r}: {exc}; "
            "no results written for it (check the weights and --dtype)"
        ) from exc
    finally:  # its progress bar ends its line, whatever stopped the task
        path.close()
    result.task = spec.key
    result.wall_s = time.perf_counter() - start
    result.blind = blind
    result.modality = task.modality
    result.source = data_source(task, spec.options.data_dir)
    result.requests, result.cached_requests = path.asked, path.cached
    return result


def describe_model(model: EvalModel) -> dict[str, Any]:
    """The ``models`` entry of results.json: kind, path, fingerprints, parameter counts."""
    from iaa_eval.models.parameters import parameter_summary

    fingerprints = {"text": model.fingerprint("text")}
    if model.supports_images:
        fingerprints["mm"] = model.fingerprint("mm")
    return {
        "kind": model.spec.kind,
        "path": model.spec.path,
        "fingerprints": fingerprints,
        "parameters": parameter_summary(model),
    }


def writable_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and prove a file can be written there, before any model is loaded: a
    read-only or misplaced run directory should fail in a second, not after an hour of work.
    (A probe file rather than ``os.access``, which says yes to root even on a read-only mount.)"""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"run directory {run_dir}: not writable ({exc.strerror or exc}); "
            "pass --output-path with a writable "
            "folder (or --run-id)"
        ) from exc


def keeps_earlier_results(config: RunConfig) -> None:
    """A run directory holds one run: rerunning its id resumes it, with the same or more models
    and tasks. Other ones would rewrite results.json without the earlier results, so that is
    refused (the samples and cache of those would be left orphaned beside it)."""
    planned = {(m.name, t.key) for m in config.models for t in config.tasks}
    earlier = recorded_results(config.run_dir)
    dropped = [f"{m}/{t}" for m, tasks in earlier.items() for t in tasks if (m, t) not in planned]
    if dropped:
        raise UsageError(
            f"run directory {config.run_dir} holds results this run would drop from its "
            f"results.json ({', '.join(dropped)}); pass another --run-id, or rerun with those "
            "models and tasks included"
        )


def run(config: RunConfig, shards: Shards | None = None) -> Path:
    """Run every model on every task; returns the run directory. Under torchrun, pass this rank's
    ``shards``: all ranks compute, rank 0 writes."""
    from iaa_eval.models import load_model

    shards = shards or Shards()
    run_dir = config.run_dir
    keeps_earlier_results(config)
    writable_run_dir(run_dir)
    cache = RequestCache(run_dir / "cache.sqlite")
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_dir.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "config": config.to_json(),
        "versions": package_versions(), "models": {}, "results": {},
    }
    shared: dict[tuple[str, str], tuple[str, TaskResult]] = {}
    start = time.perf_counter()
    try:
        for spec in config.models:
            log.info("loading %s (%s:%s)", spec.name, spec.kind, spec.path)
            model = load_model(spec)
            data["models"][spec.name] = describe_model(model)
            data["results"][spec.name] = {}
            text_fp = data["models"][spec.name]["fingerprints"]["text"]
            for task_spec in config.tasks:
                label = f"{spec.name}/{task_spec.key}"
                memo_key = (text_fp, repr(task_spec))
                modality = TASKS.get(task_spec.name).modality
                if modality == "text" and memo_key in shared:
                    owner, result = shared[memo_key]
                    log.info("%s: text fingerprint equals %s's, results shared", label, owner)
                    result = dataclasses.replace(
                        result, task_config={**result.task_config, "shared_with": owner}
                    )
                else:
                    result = _run_task(model, task_spec, cache, label, shards)
                    if modality == "text":
                        shared[memo_key] = (spec.name, result)
                log.info(
                    "%s: %s=%.4f n=%d (%d/%d requests cached) in %.1fs", label, result.primary,
                    result.metrics.get(result.primary, float("nan")), result.n,
                    result.cached_requests, result.requests, result.wall_s,
                )
                data["results"][spec.name][task_spec.key] = result.to_json()
                data["wall_s"] = time.perf_counter() - start
                if shards.is_writer:
                    if config.log_samples:
                        write_samples(run_dir, spec.name, result)
                    write_results(run_dir, data)
            del model
    except KeyboardInterrupt as exc:
        cache.close()
        raise RunInterrupted(
            f"interrupted: finished requests are kept in {run_dir / 'cache.sqlite'}; "
            "rerun the same command to resume"
        ) from exc
    log.info("reused %d cached requests from an earlier attempt", cache.reused)
    cache.close()
    return run_dir
