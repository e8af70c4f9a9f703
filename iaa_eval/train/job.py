"""What ``iaa-eval train iaa`` does, so that cli.py only parses and prints.

One IAA training stage on LLaVA conversation data (:mod:`iaa_eval.train.conversations`): build
the model (a fresh :meth:`IAAForCausalLM.from_base` over a base LM and a CLIP vision tower, or an
earlier IAA checkpoint such as the stage-1 output), train it with :func:`train_iaa_stage` and
write the checkpoint (the official layout for Llama bases, ours for Mistral/Qwen2, which the
official layout cannot hold) with its tokenizer, image processor and ``train_log.json``.

Example:
    >>> outcome = train_iaa(IAATrainJob(data=Path("llava/blip_laion_cc_sbu_558k.json"),
    ...                                 out=Path("ckpt-s1"),
    ...                                 base="meta-llama/Meta-Llama-3-8B-Instruct",
    ...                                 vision="openai/clip-vit-large-patch14-336", stage=1))
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iaa_eval import __version__, config
from iaa_eval.errors import ModelError, UsageError
from iaa_eval.models.iaa.configuration import SUPPORTED_BASES, IAAConfig
from iaa_eval.models.iaa.modeling import IAAForCausalLM
from iaa_eval.models.loading import (
    check_vocabulary,
    load_pretrained,
    load_weights,
    place,
    resolve_dtype,
)
from iaa_eval.train.conversations import Conversations, load_conversations
from iaa_eval.train.iaa import train_iaa_stage
from iaa_eval.train.loop import TrainConfig

DEFAULT_LR = {1: 1e-3, 2: 2e-5}  # LLaVA-1.5's stage 1 / stage 2 rates: IAA's own are not published
DEFAULT_POSITIONS = IAAConfig.insert_after_layers  # the config's default preset, "iaa-14"
# Llama-3's official IAA image token, then LLaVA's
IMAGE_TOKENS = ("<|reserved_special_token_44|>", "<image>")


@dataclass(frozen=True)
class IAATrainJob:
    """One ``iaa-eval train iaa`` invocation (each field is the flag of the same name, or the key
    of a ``--job`` file: see :func:`load_job`).

    Args:
        data: LLaVA conversation JSON, or a folder holding exactly one ``*.json``.
        out: the checkpoint folder to write (must not hold a checkpoint already).
        base: base LM (hub id or folder); with ``vision``, for a fresh model.
        vision: CLIP vision tower (hub id or folder, ``CLIPVisionModel`` + ``CLIPImageProcessor``).
        init: an IAA checkpoint to continue from instead of ``base`` + ``vision``.
        image_folder: where record ``image`` paths are relative to (default: the JSON's folder).
        stage: 1 = projector; 2 = insertion layers + MM embedding/norm/head + projector.
        insert_after: insertion positions, a preset (``iaa-14``) or ``"0,1,5"``; default: the
            config's.
        image_token: the tokenizer token that marks the image (default: Llama-3's or ``<image>``).
        steps: optimizer steps (default: one epoch of the examples).
        lr: peak learning rate (default: 1e-3 for stage 1, 2e-5 for stage 2).
        batch_size, micro_batch_size, seed: as in :class:`~iaa_eval.train.loop.TrainConfig`.
        device, dtype: where and in which precision to train (``auto``: bfloat16 on CUDA, else
            float32).
        limit: use the first ``limit`` records only.
        progress: tqdm bars.
    """

    data: Path
    out: Path
    base: str | None = None
    vision: str | None = None
    init: Path | None = None
    image_folder: Path | None = None
    stage: int = 2
    insert_after: str | None = None
    image_token: str | None = None
    steps: config.PositiveInt | None = None
    lr: config.Finite | None = None
    batch_size: config.PositiveInt = 8
    micro_batch_size: config.PositiveInt | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "auto"
    limit: config.PositiveInt | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.init is not None:
            given = [flag for flag, value in (("--base", self.base), ("--vision", self.vision),
                                              ("--insert-after", self.insert_after),
                                              ("--image-token", self.image_token))
                     if value is not None]
            if given:
                raise UsageError(f"--init and {given[0]} cannot be combined: the checkpoint given "
                                 "with --init already fixes its base, vision tower, insertion "
                                 "positions and image token")
        elif self.base is None or self.vision is None:
            raise UsageError("give --base and --vision (a fresh IAA model), or --init (an IAA "
                             "checkpoint to continue)")
        if self.stage not in (1, 2):
            raise UsageError(f"--stage {self.stage}: expected 1 (projector) or 2 (insertion layers "
                             "+ MM modules)")
        if self.lr is not None and not self.lr > 0:
            raise UsageError(f"--lr {self.lr}: must be a positive number")
        if self.micro_batch_size is not None and self.micro_batch_size > self.batch_size:
            raise UsageError(f"--micro-batch-size {self.micro_batch_size} exceeds --batch-size "
                             f"{self.batch_size}")


def load_job(flags: dict[str, Any], job_file: Path | None = None) -> IAATrainJob:
    """The job of ``iaa-eval train iaa``: the ``--job`` file's settings (keys named as the fields),
    overridden by the flags given; both pass :mod:`iaa_eval.config`'s type checks."""
    settings = config.read(job_file) if job_file is not None else {}
    merged = {**settings, **flags} if isinstance(settings, dict) else settings
    missing = [f"--{k}" for k in ("data", "out") if isinstance(merged, dict) and k not in merged]
    if missing:
        raise UsageError(f"give {' and '.join(missing)} (or set them in a --job file)")
    source = f"--job {job_file}" if job_file else "iaa-eval train iaa"
    return config.parse(IAATrainJob, merged, source)


@dataclass(frozen=True)
class TrainOutcome:
    """What a job wrote and how training went."""

    out: Path
    losses: list[float]
    examples: int
    wall_s: float


def positions(text: str | None) -> list[int] | str:
    """``--insert-after``: a preset name or a comma list of indices; ``None``: the config's
    default."""
    if text is None:
        return DEFAULT_POSITIONS
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts]
    if len(parts) == 1:
        return parts[0]
    raise UsageError(f"--insert-after {text!r}: expected a preset name (iaa-14) or comma-separated "
                     "layer indices")


def image_token_id(tokenizer: Any, token: str | None) -> int:
    """The id of ``token`` (default: the first of :data:`IMAGE_TOKENS` the tokenizer has)."""
    for candidate in [token] if token else IMAGE_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(candidate)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id \
                and tokenizer.convert_ids_to_tokens(token_id) == candidate:
            return token_id
    if token:
        raise UsageError(f"--image-token {token!r}: not a token of the base's tokenizer")
    raise UsageError("the base's tokenizer has none of the image tokens "
                     f"{', '.join(IMAGE_TOKENS)}: pass --image-token with an existing special "
                     "token the training text never contains")


def fresh_model(job: IAATrainJob, dtype: torch.dtype) -> tuple[IAAForCausalLM, Any, Any]:
    """(model, tokenizer, image processor): ``from_base`` over ``--base`` and ``--vision``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor

    from iaa_eval.models.iaa.convert import load_vision_tower
    from iaa_eval.models.vision import pil_image_processor

    config = load_pretrained(AutoConfig.from_pretrained, job.base, "--base")
    if config.model_type not in SUPPORTED_BASES:
        raise UsageError(f"--base {job.base!r}: model_type {config.model_type!r} is not a base IAA "
                         f"can wrap; supported: {', '.join(SUPPORTED_BASES)}")
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, job.base, "--base tokenizer")
    token_id = image_token_id(tokenizer, job.image_token)
    processor = pil_image_processor(load_pretrained(  # cheap checks first
        CLIPImageProcessor.from_pretrained, job.vision, "--vision"))
    base = load_weights(AutoModelForCausalLM.from_pretrained, job.base, "--base", dtype=dtype)
    base = place(base, job.device)
    check_vocabulary(tokenizer, base.config.vocab_size, job.base)
    vision = place(load_vision_tower(job.vision, "--vision", dtype=dtype), job.device)
    torch.manual_seed(job.seed)  # the projector's fresh initialisation
    try:
        model = IAAForCausalLM.from_base(base, vision, positions=positions(job.insert_after),
                                         image_token_id=token_id)
    except ValueError as exc:
        # IAAConfig's rules name the field (insert_after_layers is --insert-after)
        raise UsageError(f"--base {job.base!r} with --insert-after "
                         f"{job.insert_after or DEFAULT_POSITIONS}: {exc}") from exc
    return model, tokenizer, processor


def init_model(job: IAATrainJob, dtype: torch.dtype) -> tuple[IAAForCausalLM, Any, Any]:
    """(model, tokenizer, image processor) of the IAA checkpoint given with ``--init``."""
    from transformers import AutoTokenizer

    from iaa_eval.models.iaa.convert import load_image_processor

    folder = Path(job.init).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--init {str(job.init)!r}: no such directory")
    model = place(IAAForCausalLM.from_pretrained(folder, dtype=dtype), job.device)
    # config.json's model_type "IAA" is not transformers': the tokenizer reads the text config
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, str(folder), "--init tokenizer",
                                config=model.config.text_config)
    return model, tokenizer, load_image_processor(folder, model.config.vision_tower_path)


def prepare_out(out: Path) -> Path:
    """Create ``out`` now (not after hours of training) and refuse to overwrite a checkpoint."""
    out = Path(out).expanduser()
    if (out / "config.json").exists() or (out / "model.safetensors").exists():
        raise UsageError(f"--out {str(out)!r} already holds a checkpoint; pass a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {str(out)!r}: cannot create the folder "
                         f"({exc.strerror or exc})") from exc
    return out


def write_log(out: Path, job: IAATrainJob, data: Conversations, config: TrainConfig,
              losses: list[float], model: IAAForCausalLM, wall_s: float, layout: str) -> Path:
    """``train_log.json``: the job, the data, the schedule, the per-step losses and the wall
    time."""
    import transformers

    log = {
        "command": "iaa-eval train iaa",
        "job": {k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(job).items()},
        "data": {"file": str(data.source), "image_folder": str(data.image_folder),
                 "records": data.records, "examples": len(data.examples),
                 "with_image": sum(ex.image is not None for ex in data.examples)},
        "train_config": dataclasses.asdict(config),
        "insert_after_layers": list(model.config.insert_after_layers),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "layout": layout,
        "losses": losses,
        "wall_s": round(wall_s, 3),
        "versions": {"iaa_eval": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    path = out / "train_log.json"
    path.write_text(json.dumps(log, indent=2), encoding="utf-8")
    return path


def train_iaa(job: IAATrainJob) -> TrainOutcome:
    """Run ``job``: read the data, build or load the model, train one stage, write the
    checkpoint."""
    from iaa_eval.models.iaa.convert import save_iaa

    out = prepare_out(job.out)
    data = load_conversations(job.data, job.image_folder, job.limit, progress=job.progress)
    dtype = resolve_dtype(job.dtype, job.device)
    model, tokenizer, processor = (init_model(job, dtype) if job.init is not None
                                   else fresh_model(job, dtype))
    steps = job.steps or math.ceil(len(data.examples) / job.batch_size)  # default: one epoch
    config = TrainConfig(steps=steps, lr=job.lr or DEFAULT_LR[job.stage], batch_size=job.batch_size,
                         seed=job.seed, micro_batch_size=job.micro_batch_size,
                         progress=job.progress)
    start = time.perf_counter()
    losses = train_iaa_stage(model, tokenizer, processor, data.examples, stage=job.stage,
                             config=config)
    wall_s = time.perf_counter() - start
    layout = "official" if model.config.text_config.model_type == "llama" else "iaa_eval"
    log = write_log(out, job, data, config, losses, model, wall_s, layout)
    bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    if bad is not None:
        raise ModelError(f"training diverged: the loss of step {bad} is {losses[bad]}; no "
                         f"checkpoint written (losses in {log}); lower --lr")
    save_iaa(model, out, official=layout == "official", tokenizer=tokenizer,
             image_processor=processor)
    return TrainOutcome(out, losses, len(data.examples), wall_s)
