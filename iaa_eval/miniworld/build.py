"""``iaa-eval miniworld build``: write the mini-world's data and train its trio, in the real
formats.

Layout of ``out_dir`` (the shipped default is ``iaa_eval/miniworld/assets``)::

    data/{mmlu,ceval,vqav2,mme,mmbench_en}/             evaluation data in the original layouts
    base/     LlamaForCausalLM + tokenizer (byte-level BPE, ``<image>`` special token)
    llava/    LlavaForConditionalGeneration + LlavaProcessor (llava-hf layout),
    LLM unfrozen in stage 2
    iaa/      IAA model in the official layout, LLM frozen
    manifest.json                                        seeds, steps, losses, build time,
    sha256 of every file

Both multimodal models start from the same base and vision tower and see the same data in the
same order with the same steps and batch size; only what is trainable differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from iaa_eval.machine import free_cores
from iaa_eval.miniworld import ASSETS, assemble, mmdata, pretrain, world
from iaa_eval.miniworld.pretrain import (
    IMAGE_SIZE,
    PATCH,
    Schedule,
    image_processor,
    loss_curve,
    save_fp16,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """Every knob of a build. ``stage1``/``stage2`` are shared by the LLaVA-style and IAA runs."""

    lm: Schedule = Schedule(steps=2000, batch_size=32, lr=3e-3)
    vision: Schedule = Schedule(steps=1500, batch_size=64, lr=3e-3)
    # ~5 epochs of the 3.6 k captions
    stage1: Schedule = Schedule(steps=600, batch_size=32, lr=2e-3)
    # ~0.8 epoch of the 121 k stage-2 mix; ``lr`` is the LLaVA-style full fine-tune's
    stage2: Schedule = Schedule(steps=3000, batch_size=32, lr=1.7e-4)
    seq_len: int = 128
    vocab_size: int = 1536
    corpus_repeats: int = 8
    insert_after: tuple[int, ...] = (0, 1, 2, 3)
    replay_ratio: float = 0.0
    # IAA trains only its adapters on top of a frozen LM; fresh adapters take a larger learning rate
    # than a full fine-tune of pretrained weights (as LoRA-style methods do). Steps, batch size,
    # data and batch order stay shared.
    iaa_stage2_lr: float = 5e-4
    mix: mmdata.Mix = mmdata.Mix()  # what the stage-2 data asks about each training image


QUICK = Recipe(
    lm=Schedule(steps=150, batch_size=16, lr=3e-3),
    vision=Schedule(steps=100, batch_size=32, lr=3e-3),
    stage1=Schedule(steps=30, batch_size=8, lr=1e-3),
    stage2=Schedule(steps=30, batch_size=8, lr=5e-4),
    corpus_repeats=2,
)


@dataclass
class Manifest:
    """What a build wrote and how: the recipe, seeds, losses (first/last), timings, file hashes."""

    seed: int
    device: str
    quick: bool
    recipe: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    total_bytes: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    provenance: str = "one run of `iaa-eval miniworld build`"

    def write(self, out_dir: Path) -> None:
        """Hash every file under ``out_dir`` (but the manifest) and write ``manifest.json``."""
        self.files = {}
        files = (p for p in out_dir.rglob("*") if p.is_file() and p.name != "manifest.json")
        for path in sorted(files):
            data = path.read_bytes()
            self.files[path.relative_to(out_dir).as_posix()] = {
                "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.total_bytes = sum(f["bytes"] for f in self.files.values())
        text = json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n"
        (out_dir / "manifest.json").write_text(text)


def write_data(out_dir: Path, seed: int) -> dict[str, Any]:
    """All evaluation data of ``seed`` in the original layouts; returns the counts."""
    w = world.make_world(seed)
    counts: dict[str, Any] = {"mmlu": world.write_mmlu(w, out_dir / "mmlu"),
                              "ceval": world.write_ceval(w, out_dir / "ceval")}
    counts.update(mmdata.write_all(out_dir, seed))
    return counts


def tokenizer_texts(docs: list[str], examples: dict[str, list[mmdata.MMExample]]) -> list[str]:
    """What the tokenizer is trained on: the corpus, the multimodal training turns, the prompt
    frames."""
    from iaa_eval.models.templates import PLAIN_TEMPLATE

    turns = [f"{ex.prompt} {ex.answer}" for stage in examples.values() for ex in stage[:5000]]
    return docs + turns + [PLAIN_TEMPLATE, mmdata.YES_NO, mmdata.LETTER_ANSWER]


def pixel_table(processor: Any, records: list[mmdata.ImageRecord]) -> torch.Tensor:
    """Preprocessed pixels of ``records``, in order: (N, 3, 64, 64)."""
    from PIL import Image

    images = [Image.open(r.path).convert("RGB") for r in records]
    return processor(images=images, return_tensors="pt")["pixel_values"]


def build_base(out_dir: Path, recipe: Recipe, seed: int, device: str,
               manifest: Manifest) -> tuple[Any, Any]:
    """Tokenizer + pretrained tiny Llama, saved (fp16) to ``out_dir/base``; returns (model,
    tokenizer)."""
    from transformers import LlamaForCausalLM

    w = world.make_world(seed)
    docs = world.corpus(w, recipe.corpus_repeats)
    texts = tokenizer_texts(docs, mmdata.training_examples(seed, recipe.mix))
    tokenizer = pretrain.train_tokenizer(texts, recipe.vocab_size)
    rows = pretrain.pack(tokenizer, docs, recipe.seq_len)
    pretrain.seed_everything(seed)
    model = LlamaForCausalLM(pretrain.llama_config(len(tokenizer))).to(device)
    manifest.losses["base"] = loss_curve(pretrain.pretrain_lm(model, rows, recipe.lm, seed))
    manifest.data["corpus_tokens"] = int(rows.numel())
    save_fp16(model, out_dir / "base")
    tokenizer.save_pretrained(out_dir / "base")
    return model, tokenizer


def build_vision(recipe: Recipe, seed: int, device: str, manifest: Manifest) -> Any:
    """The tiny CLIP tower, pretrained on easy-vqa *train* images to classify shape and colour."""
    from transformers import CLIPVisionModel

    records = mmdata.load_split("train")
    pixels = pixel_table(image_processor(), records)
    labels = torch.tensor([[mmdata.SHAPES.index(r.shape), mmdata.COLOURS.index(r.colour)]
                           for r in records])
    pretrain.seed_everything(seed)
    tower = CLIPVisionModel(pretrain.clip_config(IMAGE_SIZE, PATCH)).to(device)
    losses, acc = pretrain.pretrain_vision(
        tower, pixels, labels, (len(mmdata.SHAPES), len(mmdata.COLOURS)), recipe.vision, seed)
    manifest.losses["vision"] = loss_curve(losses)
    manifest.metrics["vision_train_batch_acc"] = round(acc, 4)
    return tower


def build(
    out_dir: Path | str = ASSETS, seed: int = 0, device: str = "cpu", quick: bool = False,
    replay_ratio: float | None = None, recipe: Recipe | None = None,
) -> Manifest:
    """Write the data and train the trio into ``out_dir``; returns the manifest (also written)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe or (QUICK if quick else Recipe())
    if replay_ratio is not None:
        recipe = replace(recipe, replay_ratio=replay_ratio)
    if device == "cpu":
        torch.set_num_threads(free_cores())
    manifest = Manifest(seed=seed, device=device, quick=quick, recipe=asdict(recipe),
                        versions=_versions())
    timer = time.perf_counter()
    manifest.data = write_data(out_dir / "data", seed)
    manifest.seconds["data"] = round(time.perf_counter() - timer, 2)
    base, tokenizer = build_base(out_dir, recipe, seed, device, manifest)
    manifest.seconds["base"] = round(time.perf_counter() - timer, 2)
    tower = build_vision(recipe, seed, device, manifest)
    manifest.seconds["vision"] = round(time.perf_counter() - timer, 2)
    assemble.build_multimodal(out_dir, base, tokenizer, tower, recipe, seed, manifest)
    manifest.seconds["total"] = round(time.perf_counter() - timer, 2)
    manifest.metrics.update(_check(out_dir, seed, multimodal=not quick))
    manifest.write(out_dir)
    log.info("mini-world built in %.0f s: %.1f MB in %s", manifest.seconds["total"],
             manifest.total_bytes / 1e6, out_dir)
    return manifest


def _check(out_dir: Path, seed: int, multimodal: bool) -> dict[str, float]:
    """The quick scorer's view of what was built (the harness publishes the real numbers)."""
    from iaa_eval.miniworld import measure

    return manifest_metrics(measure.measure(out_dir, seed, multimodal=multimodal))


def manifest_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """``measure.measure``'s results as the manifest records them: flat keys, floats to 4 places."""
    flat = {f"{task}_{k}": v for task, row in results["text"].items() for k, v in row.items()}
    flat.update(results.get("mm", {}))
    return {k: (round(v, 4) if isinstance(v, float) and v >= 1e-4 else v) for k, v in flat.items()}


def _versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def info(out_dir: Path | str = ASSETS) -> dict[str, Any]:
    """The manifest of a built mini-world, with ``verified``: whether every file's sha256
    matches."""
    out_dir = Path(out_dir)
    path = out_dir / "manifest.json"
    if not path.exists():
        from iaa_eval.errors import DataError

        raise DataError(f"{path}: no manifest; run `iaa-eval miniworld build` first")
    manifest = json.loads(path.read_text())
    bad = [name for name, meta in manifest["files"].items()
           if not (out_dir / name).exists()
           or hashlib.sha256((out_dir / name).read_bytes()).hexdigest() != meta["sha256"]]
    manifest["verified"] = not bad
    manifest["mismatched"] = bad
    return manifest
