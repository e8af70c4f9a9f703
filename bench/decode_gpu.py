"""Greedy decode latency of the 8B trio: eager on transformers' dynamic cache (``--decode
dynamic``) against ``--decode static`` (:class:`~iaa_eval.models.generation.StaticDecode`: a
static KV cache, the decode step compiled by ``generate`` with CUDA graphs), both through
:func:`~iaa_eval.models.generation.greedy_ids`, the adapters' ``generate`` call.

Models (random bf16 weights of real shapes built on the GPU): Llama-3-8B (the text model: IAA's own
base), llava-hf LLaVA (CLIP ViT-L/14-336 + a Llama-3-8B LM), IAA-14 on the base (MM workflow, as
``bench/iaa_workflows_gpu.py`` builds it). Prompts: an image prompt (576 image positions + text,
700 in all) and a text prompt (128 tokens; blind for the multimodal models). Per case, one
``generate`` of ``--new-tokens`` greedy tokens timed step by step (a streamer's clock: ``generate``
synchronises every step anyway): the prefill apart, ms per decoded token (mean and median). The
static side's first call (compile + graph capture) is reported apart as its warm-up. Answers: the
fraction of identical token ids and the first divergence, with the eager logits' margin between the
two tokens there (bf16 rounding of other kernels can flip a near-tie). Batch 64 per-step time too
(what the suite's batched decode sees). Cases run in order of importance and the JSON is rewritten
after each; ``--deadline`` skips what would not finish in time.

    python bench/decode_gpu.py --out $OUT/decode_h200.json --deadline 530
    python bench/decode_gpu.py --tiny --device cpu   # CPU smoke test: same code, no compile
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import (  # noqa: E402
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from iaa_eval.models.generation import StaticDecode, greedy_ids  # noqa: E402
from iaa_eval.models.iaa.configuration import IMAGE_PLACEHOLDER_ID  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "iaa_workflows_gpu", ROOT / "bench" / "iaa_workflows_gpu.py"
)
workflows = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(workflows)

TARGET_MS = 7.0


def build_llava(shape: str, device: str, dtype: torch.dtype) -> LlavaForConditionalGeneration:
    """llava-hf LLaVA: the CLIP tower and Llama LM of ``shape``, the last vocabulary id as its image
    token, built on ``device`` in ``dtype`` directly."""
    vision = CLIPVisionConfig(**workflows.VISION[shape])
    text = LlamaConfig(**workflows.SHAPES[shape], tie_word_embeddings=False)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=text.vocab_size - 1,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)


class Case:
    """One model and prompt at one batch size: its ``generate``, its inputs, and an eager forward
    returning the last position's logits (to weigh a divergence)."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        ids: torch.Tensor,
        images: dict[str, Any],
        workflow: str | None = None,
    ) -> None:
        self.name, self.model, self.ids, self.images = name, model, ids, images
        self.extra = {"workflow": workflow} if workflow else {}

    def generate(self, **kwargs: Any) -> torch.Tensor:
        return self.model.generate(**self.images, **self.extra, **kwargs)

    def last_logits(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(input_ids=ids, **self.images, **self.extra, logits_to_keep=1).logits[
                :, -1
            ]


def prompt_ids(
    gen: torch.Generator,
    batch: int,
    text: int,
    vocab: int,
    image: int = 0,
    image_id: int | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """``(batch, text + image)`` random ids; ``image`` copies of ``image_id`` after 5 tokens."""
    ids = torch.randint(3, vocab - 2, (batch, text), generator=gen)
    if image:
        ids = torch.cat([ids[:, :5], torch.full((batch, image), image_id), ids[:, 5:]], dim=1)
    return ids.to(device)


def cases(
    models: dict[str, torch.nn.Module], args: argparse.Namespace
) -> list[tuple[str, int, Callable[[], Case]]]:
    """(label, batch, builder) in order of importance: batch 1 image prompts (the target), text
    prompts, then batch ``--big-batch``."""
    gen = torch.Generator().manual_seed(0)
    device, dtype = args.device, args.torch_dtype
    vision = models["iaa"].config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    vocab = models["iaa"].config.text_config.vocab_size
    text_len, image_text = args.text_tokens, args.image_prompt - patches

    def pixels(batch: int) -> torch.Tensor:
        return torch.randn(batch, 3, vision.image_size, vision.image_size, generator=gen).to(
            device, dtype
        )

    def llava(batch: int, image: bool) -> Case:
        llava_model = models["llava"]
        if not image:
            return Case(
                "llava", llava_model, prompt_ids(gen, batch, text_len, vocab, device=device), {}
            )
        ids = prompt_ids(
            gen, batch, image_text, vocab, patches, llava_model.config.image_token_id, device
        )
        return Case("llava", llava_model, ids, {"pixel_values": pixels(batch)})

    def iaa(batch: int, image: bool) -> Case:
        if not image:
            return Case(
                "iaa",
                models["iaa"],
                prompt_ids(gen, batch, text_len, vocab, device=device),
                {},
                "mm",
            )
        ids = prompt_ids(gen, batch, image_text, vocab, 1, IMAGE_PLACEHOLDER_ID, device)
        return Case("iaa", models["iaa"], ids, {"pixel_values": pixels(batch)}, "mm")

    def text(batch: int) -> Case:
        return Case(
            "text",
            models["iaa"].base_lm,
            prompt_ids(gen, batch, text_len, vocab, device=device),
            {},
        )

    big = args.big_batch
    return [
        ("llava image", 1, lambda: llava(1, True)),
        ("iaa image", 1, lambda: iaa(1, True)),
        ("llava text", 1, lambda: llava(1, False)),
        ("iaa text", 1, lambda: iaa(1, False)),
        ("llama text", 1, lambda: text(1)),
        ("llava image", big, lambda: llava(big, True)),
        ("iaa image", big, lambda: iaa(big, True)),
        ("llama text", big, lambda: text(big)),
    ]


class StepClock:
    """A ``generate`` streamer keeping the time of each ``put``: the prompt, then every new token
    (after a device sync, which ``generate``'s stopping check makes every step anyway)."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def put(self, value: torch.Tensor) -> None:
        workflows.sync(self.device)
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def decode(
    case: Case, static: StaticDecode | None, new_tokens: int, device: str
) -> tuple[torch.Tensor, dict]:
    """One greedy ``generate`` of ``new_tokens`` (no EOS): its new ids and its timings."""
    clock = StepClock(device)
    inputs = {"input_ids": case.ids, "attention_mask": torch.ones_like(case.ids), "streamer": clock}
    start = time.perf_counter()
    ids = greedy_ids(case.generate, inputs, new_tokens, [], 0, watch=case.model, static=static)
    workflows.sync(device)
    wall = time.perf_counter() - start
    steps = sorted(b - a for a, b in zip(clock.times[1:-1], clock.times[2:], strict=True))
    return ids, {
        "wall_s": wall,
        "prefill_ms": (clock.times[1] - clock.times[0]) * 1e3,
        "ms_per_token_mean": (clock.times[-1] - clock.times[1]) / max(1, len(steps)) * 1e3,
        "ms_per_token_median": steps[len(steps) // 2] * 1e3 if steps else None,
    }


def agreement(case: Case, eager: torch.Tensor, static: torch.Tensor) -> dict[str, Any]:
    """Identical-token fraction, first divergence and, there (row 0), the eager logits' margin
    between the eager and the static token, beside the top-2 gap."""
    same = (eager == static).float()
    columns = (eager != static).any(0).nonzero()
    out: dict[str, Any] = {"identical_fraction": same.mean().item(), "identical": bool(same.all())}
    if len(columns):
        at = int(columns[0])
        row = int((eager[:, at] != static[:, at]).nonzero()[0])
        prefix = torch.cat([case.ids[row : row + 1], eager[row : row + 1, :at]], dim=1)
        logits = case.last_logits(prefix)[0].float()
        top = logits.topk(2).values
        out["first_divergence"] = {
            "row": row,
            "position": at,
            "eager_token": int(eager[row, at]),
            "static_token": int(static[row, at]),
            "eager_logit_margin": (logits[eager[row, at]] - logits[static[row, at]]).item(),
            "top2_gap": (top[0] - top[1]).item(),
            "logit_std": logits.std().item(),
        }
    return out


def run_case(case: Case, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """Eager dynamic (warmed on a short run) then static (its first call: compile and capture)."""
    tokens = args.new_tokens if batch == 1 else args.big_new_tokens
    decode(case, None, 4, args.device)
    eager_ids, eager = decode(case, None, tokens, args.device)
    static = StaticDecode(case.model)
    first_ids, first = decode(case, static, tokens, args.device)
    static_ids, steady = decode(case, static, tokens, args.device)
    steady["first_call_s"] = first["wall_s"]
    steady["compile_warmup_s"] = first["wall_s"] - steady["wall_s"]
    steady["compiled"] = hasattr(case.model, "_compiled_call")
    steady["cache_len"] = static.shape[1]
    steady["repeatable"] = bool(torch.equal(first_ids, static_ids))
    return {
        "prompt_tokens": case.ids.shape[1],
        "new_tokens": tokens,
        "dynamic": eager,
        "static": steady,
        "speedup": eager["ms_per_token_mean"] / steady["ms_per_token_mean"],
        "answers": agreement(case, eager_ids, static_ids),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--new-tokens", type=int, default=None, help="batch 1 (default 128; tiny 8)"
    )
    parser.add_argument("--big-batch", type=int, default=None, help="default 64 (tiny 3)")
    parser.add_argument(
        "--big-new-tokens", type=int, default=None, help="at --big-batch (default 32; tiny 4)"
    )
    parser.add_argument(
        "--image-prompt", type=int, default=None, help="tokens incl. the image's (default 700)"
    )
    parser.add_argument(
        "--text-tokens", type=int, default=None, help="text prompt (default 128; tiny 12)"
    )
    parser.add_argument(
        "--only", default=None, help="cases, comma-separated: LABEL or LABEL@BATCH ('iaa image@64')"
    )
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds: skip cases that would pass it"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the JSON here (after each case)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    shape = "tiny" if args.tiny else "llama3-8b"
    args.new_tokens = args.new_tokens or (8 if args.tiny else 128)
    args.big_batch = args.big_batch or (3 if args.tiny else 64)
    args.big_new_tokens = args.big_new_tokens or (4 if args.tiny else 32)
    args.image_prompt = args.image_prompt or (20 if args.tiny else 700)
    args.text_tokens = args.text_tokens or (12 if args.tiny else 128)
    args.torch_dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    cuda = args.device.startswith("cuda")
    models = {
        "iaa": workflows.build(shape, args.device, args.torch_dtype),
        "llava": build_llava(shape, args.device, args.torch_dtype),
    }
    report: dict[str, Any] = {
        "shape": shape,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "dtype": str(args.torch_dtype),
        "target_ms_per_token": TARGET_MS,
        "static_cache_bucket": StaticDecode.bucket,
        "build_s": time.perf_counter() - started,
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
        },
        "cases": [],
    }
    wanted = set(args.only.split(",")) if args.only else None
    slowest = 0.0
    for label, batch, build_case in cases(models, args):
        entry: dict[str, Any] = {"case": label, "batch": batch}
        left = args.deadline - (time.perf_counter() - started) if args.deadline else None
        if wanted is not None and not {label, f"{label}@{batch}"} & wanted:
            continue
        if left is not None and left < 1.5 * slowest + 15:
            entry["skipped"] = f"deadline: {left:.0f} s left, the slowest case took {slowest:.0f} s"
        else:
            begun = time.perf_counter()
            try:
                entry.update(run_case(build_case(), batch, args))
            except Exception as error:  # noqa: BLE001 (one failing case must not lose the others)
                entry["error"] = f"{type(error).__name__}: {error}"[:2000]
            entry["case_s"] = time.perf_counter() - begun
            slowest = max(slowest, entry["case_s"])
            gc.collect()
            if cuda:
                entry["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.empty_cache()
        report["cases"].append(entry)
        report["elapsed_s"] = time.perf_counter() - started
        write(report, args.out)
    print(json.dumps(report, indent=2))
    return report


def write(report: dict, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
