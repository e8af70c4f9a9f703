"""The user's choices -> a RunConfig: models, tasks, data folders, placement and the run directory.

The command line parses flags into :class:`RunChoices`; everything that turns those choices into a
run (checking them, pairing VLMs with their bases, naming the run directory) lives here, so it is
usable without argparse. Errors name the flag the user gave.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from iaa_eval.errors import UsageError
from iaa_eval.evaluate import RunConfig, TaskSpec
from iaa_eval.models import MODEL_KINDS
from iaa_eval.models.base import ModelSpec
from iaa_eval.models.placement import parse_placement
from iaa_eval.names import path_name
from iaa_eval.pairing import pair_vlm
from iaa_eval.suites import load_suite, with_options
from iaa_eval.tasks import TASKS


@dataclass(frozen=True)
class RunChoices:
    """What `iaa-eval run` was asked for; fields mirror its flags (``models``: NAME=KIND:PATH)."""

    models: tuple[str, ...] = ()
    tasks: str | None = None
    suite: str | None = None
    data_dirs: tuple[str, ...] = ()
    limit: int | None = None
    num_fewshot: int | None = None
    formulation: str | None = None
    on_error: str = "raise"
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int | str = 8
    decode: str = "dynamic"
    trust_remote_code: bool = False
    device_map: str | None = None
    max_memory: str | None = None
    vlm: bool = False
    pairs: Path | None = None
    allow_tokenizer_mismatch: bool = False
    output_path: Path = Path("runs")
    run_id: str | None = None
    log_samples: bool = False


def plan_run(choices: RunChoices, world_size: int = 1) -> RunConfig:
    """Check the choices and assemble the run they describe (``world_size``: torchrun ranks)."""
    if choices.run_id is not None:
        path_name(choices.run_id, "--run-id")
    memory = parse_placement(choices.device_map, choices.max_memory, world_size)
    user_models = _model_specs(choices)
    suite_models, tasks = _task_specs(choices, bool(user_models))
    models = user_models or [
        dataclasses.replace(
            m, device=choices.device, dtype=choices.dtype, batch_size=choices.batch_size
        )
        for m in suite_models
    ]
    if not models:
        raise UsageError(
            "no models: pass --model NAME=KIND:PATH (or --base/--llava/--iaa), "
            "or a suite with defaults"
        )
    models = [
        dataclasses.replace(m, device_map=choices.device_map, max_memory=memory,
                            decode=choices.decode)
        for m in models
    ]
    models, pairing = pair_vlm(
        models, "vlm" if choices.vlm else None, tasks, choices.pairs,
        choices.allow_tokenizer_mismatch,
    )
    label = Path(choices.suite).stem if choices.suite else "run"
    run_id = choices.run_id or _run_id(label, models, tasks)
    log_samples = choices.log_samples or bool(choices.suite)
    return RunConfig(
        tuple(models), tuple(tasks), choices.output_path / run_id, log_samples, choices.suite,
        pairing,
    )


def _model_specs(choices: RunChoices) -> list[ModelSpec]:
    specs = []
    for entry in choices.models:
        name, sep, rest = entry.partition("=")
        kind, sep2, path = rest.partition(":")
        if not (sep and sep2 and name and kind and path):
            raise UsageError(
                f"--model {entry!r}: expected NAME=KIND:PATH, "
                "e.g. base=hf:meta-llama/Meta-Llama-3-8B"
            )
        path_name(name, f"--model {entry!r}: model name")
        MODEL_KINDS.require(kind)
        if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
            raise UsageError(f"--model {entry!r}: no such directory {path!r}")
        specs.append(ModelSpec(
            name, kind, path, choices.device, choices.dtype, choices.batch_size,
            choices.trust_remote_code,
        ))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--model: duplicate model names in {names}")
    return specs


def _data_dirs(entries: tuple[str, ...]) -> dict[str | None, Path]:
    dirs: dict[str | None, Path] = {}
    for entry in entries:
        task, sep, path = entry.partition("=")
        key, value = (task, path) if sep and not Path(entry).exists() else (None, entry)
        if not Path(value).expanduser().exists():
            raise UsageError(f"--data-dir {entry!r}: no such directory")
        dirs[key] = Path(value).expanduser()
    return dirs


def _task_specs(choices: RunChoices, user_models: bool) -> tuple[list, list[TaskSpec]]:
    if bool(choices.tasks) == bool(choices.suite):
        raise UsageError("give exactly one of --tasks and --suite")
    models: list = []
    if choices.suite:
        suite = load_suite(choices.suite)
        tasks = list(suite.real_tasks or suite.tasks) if user_models else list(suite.tasks)
        models = [] if user_models else list(suite.models)
        if not user_models and not models:
            raise UsageError(
                f"suite {suite.name!r} has no default models: pass --model/--base/--llava/--iaa"
            )
    else:
        tasks = [TaskSpec(name.strip()) for name in choices.tasks.split(",") if name.strip()]
        if not tasks:
            raise UsageError(f"--tasks {choices.tasks!r}: no task names; e.g. --tasks mmlu,mme")
    for spec in tasks:
        TASKS.require(spec.name)
    dirs = _data_dirs(choices.data_dirs)
    if None in dirs and len(tasks) > 1:
        raise UsageError(
            "--data-dir PATH with several tasks is ambiguous: use --data-dir TASK=PATH"
        )
    unused = [name for name in dirs if name is not None and name not in {t.name for t in tasks}]
    if unused:
        raise UsageError(f"--data-dir {unused[0]}=...: task {unused[0]!r} is not in this run "
                         f"(tasks: {', '.join(t.name for t in tasks)})")
    on_error = choices.on_error if choices.on_error != "raise" else None
    tasks = [
        with_options(
            t, data_dir=dirs.get(t.name, dirs.get(None)), limit=choices.limit,
            num_fewshot=choices.num_fewshot, formulation=choices.formulation, on_error=on_error,
        )
        for t in tasks
    ]
    return models, tasks


def _run_id(label: str, models: list, tasks: list) -> str:
    """The settings' hash, so a rerun with the same choices resumes the same directory."""
    payload = json.dumps([repr(m) for m in models] + [repr(t) for t in tasks], sort_keys=True)
    return f"{label}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"
