"""`iaa-eval`: parse flags, call the library, print. Errors are one line (``--debug``: traceback).

This is the only module that reads environment variables or sizes thread pools.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from iaa_eval import __version__
from iaa_eval.errors import UsageError
from iaa_eval.exits import finish
from iaa_eval.machine import free_cores
from iaa_eval.resources import GATE_THRESHOLDS

log = logging.getLogger("iaa_eval")
KIND_FLAGS = {"base": "hf", "llava": "llava", "iaa": "iaa", "vlm": "vlm"}


def _positive_int(text: str, minimum: int = 1) -> int:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from exc
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def _batch_size(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    """All sub-commands and flags (flags follow lm-eval's names, with dashes)."""
    parser = argparse.ArgumentParser(prog="iaa-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"iaa-eval {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_run(sub)

    report = sub.add_parser("report",
                            help="render a run (or compare two) as HTML, or export tables")
    report.add_argument("runs", nargs="+", type=Path, help="one run directory, or two to compare")
    report.add_argument("--out", type=Path,
                        help="reports root (default: reports/, page in reports/<run-id>/)")
    report.add_argument("--format", choices=["html", "csv", "json"], default="html")

    gate = sub.add_parser("gate",
                          help="check a run against thresholds; exit 0 pass, 1 breach, 2 unusable")
    gate.add_argument("run", type=Path)
    gate.add_argument("--thresholds", type=Path, default=GATE_THRESHOLDS, help="default: shipped")
    gate.add_argument("--against", type=Path, help="an earlier run to check for regressions")

    sub.add_parser("tasks", help="list tasks and suites")

    _add_train(sub)

    world = sub.add_parser("miniworld", help="rebuild or describe the embedded mini-world trio")
    world.add_argument("action", choices=["build", "info"])
    world.add_argument("--out", type=Path, help="build: folder to write (required); info: to read")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--device", default="cpu")
    world.add_argument("--quick", action="store_true",
                       help="a minutes-long CPU build that proves the recipe trains")
    return parser


def _add_run(sub: argparse._SubParsersAction) -> None:
    """`iaa-eval run` (the fields of iaa_eval.runplan.RunChoices, plus the thread count)."""
    run = sub.add_parser("run", help="evaluate models on tasks or a suite")
    run.add_argument("--model", action="append", default=[], metavar="NAME=KIND:PATH",
                     help="a model to evaluate (KIND: hf, llava, iaa, vlm); repeatable")
    for flag, kind in KIND_FLAGS.items():
        run.add_argument(f"--{flag}", metavar="PATH",
                         help=f"shorthand for --model {flag}={kind}:PATH")
    run.add_argument("--pairs", type=Path, metavar="FILE",
                     help="VLM -> base pairs (default: shipped)")
    run.add_argument("--allow-tokenizer-mismatch", action="store_true",
                     help="run a --vlm pair whose tokenizers disagree (rate kept in results.json)")
    run.add_argument("--tasks", help="comma-separated task names (see `iaa-eval tasks`)")
    run.add_argument("--suite", help="a shipped suite (e.g. forgetting) or a suite file")
    run.add_argument("--data-dir", action="append", default=[], metavar="[TASK=]PATH",
                     help="local files in the benchmark's original layout "
                          "(default: the hub dataset)")
    run.add_argument("--limit", type=_positive_int,
                     help="at most N items per task (per subject for text tasks)")
    run.add_argument("--num-fewshot", type=lambda n: _positive_int(n, 0), help="text tasks' shots")
    run.add_argument("--formulation", choices=["letter", "cloze"],
                     help="text tasks: answer letters or option text")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    run.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    run.add_argument("--device-map", help="split models over GPUs: auto|balanced|sequential|...")
    run.add_argument("--max-memory", metavar="DEV=SIZE,..", help="per device: 0=70GiB,cpu=200GiB")
    run.add_argument("--batch-size", type=_batch_size, default=8,
                     help="N or auto (sized from free memory)")
    run.add_argument("--decode", choices=["dynamic", "static"], default="dynamic",
                     help="greedy decoding's KV cache; static: compiled with CUDA graphs on CUDA")
    run.add_argument("--log-samples", action="store_true",
                     help="write samples/<model>/<task>.jsonl (suites always do)")
    run.add_argument("--output-path", type=Path, default=Path("runs"),
                     help="where run directories go")
    run.add_argument("--run-id",
                     help="run directory name "
                          "(default: derived from the settings, so a rerun resumes)")
    run.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                     help="bad data rows: stop or count+skip")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="allow code shipped with a checkpoint to run")
    run.add_argument("--threads", type=_positive_int,
                     help="CPU threads (default: the cores not busy now)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    """`iaa-eval train iaa` (flags named as the fields of iaa_eval.train.job.IAATrainJob; a flag not
    given is absent, so a --job file's setting stands)."""
    train = sub.add_parser("train", help="train an IAA model on LLaVA conversation data (a stage)",
                           argument_default=argparse.SUPPRESS)
    train.add_argument("family",
                       help="iaa (LLaVA-style training is the library API "
                            "iaa_eval.train.train_llava_stage)")
    train.add_argument("--base", metavar="ID|DIR",
                       help="base LM to wrap (a fresh model; with --vision)")
    train.add_argument("--vision", metavar="ID|DIR",
                       help="CLIP vision tower (CLIPVisionModel + CLIPImageProcessor)")
    train.add_argument("--init", metavar="DIR", help="continue from an IAA checkpoint (stage 1's)")
    train.add_argument("--data", help="LLaVA conversation JSON, or a folder with one *.json")
    train.add_argument("--image-folder", help="image paths are relative to it (default: JSON's)")
    train.add_argument("--out", help="checkpoint folder to write (official layout)")
    train.add_argument("--stage", type=int, choices=[1, 2], help="1: projector; 2 (default): "
                       "projector + insertion layers + MM embedding, norm and head")
    train.add_argument("--insert-after", metavar="PRESET|I,J,..",
                       help="insertion positions (default: iaa-14)")
    train.add_argument("--image-token",
                       help="tokenizer token marking the image (default: Llama-3's, else <image>)")
    train.add_argument("--steps", type=_positive_int, help="optimizer steps (default: one epoch)")
    train.add_argument("--lr", type=float,
                       help="peak learning rate (default: 1e-3 stage 1, 2e-5 stage 2)")
    train.add_argument("--batch-size", type=_positive_int, help="examples per step (default: 8)")
    train.add_argument("--micro-batch-size", type=_positive_int,
                       help="examples per forward/backward (gradients "
                       "accumulate to --batch-size; default: the whole batch at once)")
    train.add_argument("--seed", type=int, help="default: 0")
    train.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    train.add_argument("--dtype", help="auto (bfloat16 on CUDA, else float32), float32, ...")
    train.add_argument("--limit", type=_positive_int,
                       help="use the first N conversation records only")
    train.add_argument("--threads", type=_positive_int,
                       help="CPU threads (default: the cores not busy now)")
    train.add_argument("--job", type=Path, metavar="FILE", help="YAML/JSON of these settings (keys "
                       "as the flags, with _); the flags given override it")


def cmd_run(args: argparse.Namespace) -> int:
    """`iaa-eval run`: torchrun's ranks and the thread pool from here; the run from runplan."""
    import torch

    from iaa_eval.evaluate import run
    from iaa_eval.runner.distributed import joined_shards
    from iaa_eval.runplan import RunChoices, plan_run

    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world_size > 1 and device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    torch.set_num_threads(args.threads or max(1, free_cores() // world_size))
    shorthands = [
        f"{flag}={kind}:{getattr(args, flag)}"
        for flag, kind in KIND_FLAGS.items() if getattr(args, flag)
    ]
    choices = RunChoices(
        models=(*args.model, *shorthands), tasks=args.tasks, suite=args.suite,
        data_dirs=tuple(args.data_dir), limit=args.limit, num_fewshot=args.num_fewshot,
        formulation=args.formulation, on_error=args.on_error, device=device, dtype=args.dtype,
        batch_size=args.batch_size, decode=args.decode, trust_remote_code=args.trust_remote_code,
        device_map=args.device_map, max_memory=args.max_memory, vlm=bool(args.vlm),
        pairs=args.pairs, allow_tokenizer_mismatch=args.allow_tokenizer_mismatch,
        output_path=args.output_path, run_id=args.run_id, log_samples=args.log_samples,
    )
    config = plan_run(choices, world_size)  # every usage error before the ranks join
    with joined_shards(rank, world_size, device) as shards:
        run_dir = run(config, shards)
    if rank == 0:
        print(f"results: {run_dir / 'results.json'}")  # noqa: T201
    return 0


def cmd_tasks(_: argparse.Namespace) -> int:
    """`iaa-eval tasks`: names only, no heavy imports."""
    from iaa_eval.models.vlm_families import supported_families
    from iaa_eval.suites import list_suites
    from iaa_eval.tasks import TASKS

    print("tasks:  " + ", ".join(TASKS.names()))  # noqa: T201
    for suite in list_suites():
        print(f"suite {suite.name}: {' '.join(suite.description.split())}")  # noqa: T201
    families = "VLM families (--model NAME=vlm:PATH, model_type from config.json):\n"
    print(families + supported_families())  # noqa: T201
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`iaa-eval report`: a page for one run, a comparison for two; --format csv|json adds the
    tables."""
    from iaa_eval.report.cli_helpers import report

    fmt = None if args.format == "html" else args.format
    for path in report(args.runs, args.out or Path("reports"), fmt):
        print(path)  # noqa: T201
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    """`iaa-eval gate`: the exit code is the verdict (0 pass, 1 breach, 2 unusable input)."""
    from iaa_eval.report.cli_helpers import gate

    code, text = gate(args.run, args.thresholds, args.against)
    print(text)  # noqa: T201
    return code


def cmd_train(args: argparse.Namespace) -> int:
    """`iaa-eval train iaa`: one IAA training stage; writes the checkpoint and train_log.json."""
    if args.family != "iaa":
        raise UsageError(f"train {args.family!r}: only 'iaa' is a command; LLaVA-style training "
                         "is a library API (iaa_eval.train.train_llava_stage)")
    import torch

    from iaa_eval.train.job import load_job, train_iaa

    torch.set_num_threads(getattr(args, "threads", None) or free_cores())
    flags = {k: v for k, v in vars(args).items()
             if k not in ("command", "family", "debug", "threads", "job")}
    outcome = train_iaa(load_job(flags, getattr(args, "job", None)))
    print(f"checkpoint: {outcome.out} ({len(outcome.losses)} steps on "  # noqa: T201
          f"{outcome.examples} examples, final loss {outcome.losses[-1]:.4f}, "
          f"{outcome.wall_s:.0f} s)")
    return 0


def cmd_miniworld(args: argparse.Namespace) -> int:
    """`iaa-eval miniworld build|info`."""
    from iaa_eval.miniworld import ASSETS, build

    out = args.out or ASSETS
    if args.action == "info":
        print(json.dumps(build.info(out), indent=2))  # noqa: T201
        return 0
    if args.out is None:  # the shipped trio is what the tests and baselines check
        raise UsageError(f"miniworld build: give --out FOLDER (the shipped trio {ASSETS} is "
                         "replaced only when --out names it)")
    manifest = build.build(out, seed=args.seed, device=args.device, quick=args.quick)
    print(f"mini-world written to {out} ({manifest.total_bytes / 1e6:.1f} MB)")  # noqa: T201
    return 0


COMMANDS = {"run": cmd_run, "tasks": cmd_tasks, "report": cmd_report, "gate": cmd_gate,
            "train": cmd_train, "miniworld": cmd_miniworld}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(message)s")
    if not args.debug:
        for noisy in ("transformers", "datasets", "lm_eval", "httpx", "urllib3", "filelock"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return finish(lambda: COMMANDS[args.command](args), args.debug)
