"""MME-shaped generation on 7-8B VLMs of two families: ours beside plain transformers ``generate``.

Issue 15 item 9. Two random-weight models of real shapes, built in bf16 on the GPU (fixed seeds):
Qwen2.5-VL-7B-Instruct (``Qwen2_5_VLForConditionalGeneration``: the 7B checkpoint's 32-block
window-attention vision tower, its Qwen2.5-7B text model, M-RoPE) and llava-hf's
llama3-llava-next-8b-hf (``LlavaNextForConditionalGeneration``: CLIP ViT-L/14-336, Llama-3-8B,
anyres tiles). Each gets a byte-level BPE tokenizer trained on the prompts (the real ones cannot
be downloaded here) with the family's special tokens and chat template, the checkpoint's image
processor settings (PIL, no torchvision) and its processor, assembled by the adapter's own
``build_processor`` from a folder, as ``iaa-eval run`` builds it.

Work: MME's question files (``--source``, ``../shared/data/mme``; made-up questions when absent)
written in MME's layout with images synthesised at MME's sizes, a seeded ``--images`` subset, read
back by the MME task's loader into the requests it asks (its prompt suffix, 16 new tokens).
Timed per model, within its share of ``--deadline``:

1. **ours**: ``VLMModel.from_model(spec, model, processor).generate`` with ``batch_size="auto"``,
   ``tasks.multimodal.CHUNK`` requests per call as the MME task hands them over (vision-feature
   cache; shared image prefix where the family allows it: ``shared_prefix_batches`` says
   whether it engaged);
2. **plain** transformers ``generate`` with the processor and chat template (lmms-eval's default
   loop) at batch 1 on ``--plain-requests`` requests, and at each of ``--plain-batches``;
3. **agreement**: ours vs plain batch 1 on the same requests, answer by answer (differences listed
   with the first diverging token), and ours with the shared prefix off and with the pixel path
   (no feature cache) to attribute them. bf16 near-ties on random weights can flip a token.

Rates are measured on the subsets and extrapolated to MME's 2,374 questions (the JSON says so).

GPU (one H200, both models in one call, transformers 5 wheels carried)::

    python bench/vlm_generate_gpu.py --source .gpu/data --images 250 --plain-requests 32 \
        --plain-batches 1 8 32 64 --out $OUT/vlm_generate_h200.json --deadline 480

``--deadline`` bounds the whole call (each model gets an equal share of what is left when it
starts; within it, each phase stops after the batch that crosses its own share).

``--tiny``: 2-layer models of both families on CPU in float32, a few images, every code path of
the GPU run but device and dtype; the smoke test (``tests/bench/test_vlm_generate_bench.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("suite_gpu", ROOT / "bench" / "suite_gpu.py")
suite_gpu = importlib.util.module_from_spec(_spec)
sys.modules["suite_gpu"] = suite_gpu  # its image-drawing workers are pickled by module name
_spec.loader.exec_module(suite_gpu)
mmlu_gpu = suite_gpu.mmlu_gpu

MME_QUESTIONS = 2374
MAX_NEW_TOKENS = 16  # MMETask.run's default max_new_tokens
# Qwen2.5-VL's chat template (images and text; its default system turn when none is given)
QWEN_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in c %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
# llama3-llava-next-8b-hf's anyres grid
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
TINY_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=4096,
)


# --------------------------------------------------------------------------- the two families


def _qwen_config(ids: dict[str, int], tiny: bool) -> dict[str, Any]:
    """Qwen2.5-VL-7B-Instruct's config.json (``rope_scaling`` as transformers 5's
    ``rope_parameters``), or a 2-layer one."""
    text = dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        vocab_size=152064,
        use_sliding_window=False,
        sliding_window=32768,
        max_window_layers=28,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    )
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        in_channels=3,
        out_hidden_size=3584,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
        hidden_act="silu",
    )
    if tiny:
        text.update(
            TINY_TEXT,
            vocab_size=ids["vocab"],
            rope_parameters={**text["rope_parameters"], "mrope_section": [1, 1, 2]},
        )
        vision.update(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=32,
            patch_size=8,
            window_size=32,
            fullatt_block_indexes=[1],
        )
    return dict(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _llava_next_config(ids: dict[str, int], tiny: bool) -> dict[str, Any]:
    """llava-hf/llama3-llava-next-8b-hf's config (CLIP ViT-L/14-336, Llama-3-8B), or a tiny one."""
    text = dict(
        model_type="llama",
        **{k: v for k, v in mmlu_gpu.LLAMA3_8B.items() if k != "vocab_size"},
        vocab_size=128320,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    vision = dict(model_type="clip_vision_model", **suite_gpu.CLIP_L336)
    if tiny:
        text.update(TINY_TEXT, vocab_size=ids["vocab"])
        vision.update(model_type="clip_vision_model", **suite_gpu.TINY_VISION)
    side, patch = vision["image_size"], vision["patch_size"]
    return dict(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        image_token_id=ids["<image>"],
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=TINY_PINPOINTS if tiny else PINPOINTS,
        image_seq_length=(side // patch) ** 2,
    )


def _qwen_tokenizer(texts: list[str], vocab: int) -> Any:
    """mmlu_gpu's byte-level BPE without the BOS (Qwen adds none), with Qwen's chat and vision
    tokens, ``<|im_end|>`` ending answers and ``<|endoftext|>`` padding, as Qwen2.5-VL's."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = mmlu_gpu.train_tokenizer(texts, vocab).backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    backend.add_special_tokens(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *QWEN_TOKENS.values()]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(QWEN_TOKENS),
    )
    tokenizer.chat_template = QWEN_TEMPLATE
    return tokenizer


def _qwen_images(tiny: bool) -> Any:
    """The checkpoint's preprocessor_config.json (min/max pixels 3136 / 12845056: MME images keep
    their size, rounded to 28 px), or tiny patches."""
    from transformers import Qwen2VLImageProcessorPil

    if tiny:
        return Qwen2VLImageProcessorPil(
            patch_size=8, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
        )
    return Qwen2VLImageProcessorPil(size={"shortest_edge": 3136, "longest_edge": 12845056})


def _llava_next_images(tiny: bool) -> Any:
    from transformers import LlavaNextImageProcessorPil

    side = suite_gpu.TINY_VISION["image_size"] if tiny else 336
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_grid_pinpoints=TINY_PINPOINTS if tiny else PINPOINTS,
    )


class Shape(NamedTuple):
    """One model to time: how its config, tokenizer and image processor are built."""

    model_type: str
    label: str
    config: Callable[[dict[str, int], bool], dict[str, Any]]
    tokenizer: Callable[[list[str], int], Any]
    special_tokens: tuple[str, ...]
    image_processor: Callable[[bool], Any]
    processor_config: dict[str, Any] | None = None
    image_token: str = "<image>"


SHAPES = {
    s.model_type: s
    for s in (
        Shape(
            "qwen2_5_vl",
            "Qwen2.5-VL-7B-Instruct",
            _qwen_config,
            _qwen_tokenizer,
            tuple(QWEN_TOKENS.values()),
            _qwen_images,
            image_token="<|image_pad|>",
        ),
        Shape(
            "llava_next",
            "llava-hf/llama3-llava-next-8b-hf",
            _llava_next_config,
            suite_gpu.build_tokenizer,
            ("<image>",),
            _llava_next_images,
            dict(
                patch_size=14,
                vision_feature_select_strategy="default",
                num_additional_image_tokens=1,
                image_token="<image>",
            ),
        ),
    )
}


def model_config(
    shape: Shape, ids: dict[str, int], tiny: bool, ends: dict[str, int | None] | None = None
) -> Any:
    """The family's config; ``ends``: the text model's BOS/EOS/PAD ids (the tokenizer's)."""
    from transformers import AutoConfig

    kwargs = shape.config(ids, tiny)
    kwargs["text_config"].update(ends or {})
    return AutoConfig.for_model(shape.model_type, **kwargs)


def real_parameters(shape: Shape) -> int:
    """Parameters of the real-shaped model, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForImageTextToText

    ids = {t: i for i, t in enumerate(shape.special_tokens)}
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(model_config(shape, ids, tiny=False))
    return sum(p.numel() for p in model.parameters())


def build(
    shape: Shape, texts: list[str], tiny: bool, device: str, seed: int, folder: Path
) -> tuple[Any, Any]:
    """The random model on ``device`` and its processor, built by the adapter's
    ``build_processor`` from ``folder`` (tokenizer, image processor, processor settings)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from iaa_eval.models.vlm_processor import build_processor

    tokenizer = shape.tokenizer(texts, 1000 if tiny else 32000)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in shape.special_tokens}
    ends = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = model_config(shape, {**ids, "vocab": len(tokenizer)}, tiny, ends)
    config.save_pretrained(folder)  # AutoProcessor finds the processor class through it
    tokenizer.save_pretrained(folder)
    shape.image_processor(tiny).save_pretrained(folder)
    if shape.processor_config:  # the processor counts image tokens by the tower's patch size
        settings = {**shape.processor_config, "patch_size": config.vision_config.patch_size}
        (folder / "processor_config.json").write_text(json.dumps(settings))
    processor = build_processor(str(folder), shape.model_type)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype).eval()
    # what a checkpoint's generation_config.json says: answers end at the tokenizer's EOS
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


# --------------------------------------------------------------------------- work


def synthetic_source(root: Path, seed: int) -> Path:
    """MME's ground-truth layout with made-up yes/no questions, two per image, when the real
    question files are absent."""
    from iaa_eval.metrics.mme import SUBTASKS

    rng = random.Random(seed)
    words = ["red", "car", "dog", "sign", "painting", "tower", "person", "chart", "code", "tree"]
    (root / "mme" / "ground_truth").mkdir(parents=True, exist_ok=True)
    for subtask in SUBTASKS:
        lines = []
        for n in range(12):
            things = rng.sample(words, 2)  # MME asks two different questions of an image
            for thing, answer in zip(things, ("Yes", "No"), strict=True):
                lines.append(
                    f"{n:04d}.jpg\tIs there a {thing} in this image? Please answer yes "
                    f"or no.\t{answer}\n"
                )
        (root / "mme" / "ground_truth" / f"{subtask}.txt").write_text("".join(lines))
    return root


def mme_requests(source: Path, data: Path, images: int, seed: int, tiny: bool) -> list[Any]:
    """A seeded ``images`` of MME written in its layout (suite_gpu's synthesis), read back by the
    MME task's loader and turned into requests as ``tasks.multimodal.ask`` does."""
    from iaa_eval.models.base import MMRequest
    from iaa_eval.models.vision import image_key
    from iaa_eval.tasks import mme
    from iaa_eval.tasks.multimodal import Problems

    if not (source / "mme" / "ground_truth").is_dir():
        source = synthetic_source(data / "source", seed)
    suite_gpu.write_mme(source, data / "mme", images, seed, tiny)
    requests, opened = [], {}
    for item in mme.load_local(data / "mme", Problems("raise")):
        if id(item.source) not in opened:
            image = item.source.open(None)
            opened[id(item.source)] = (image, image_key(image))
        image, key = opened[id(item.source)]
        requests.append(MMRequest(item.prompt, image, key, MAX_NEW_TOKENS))
    return requests


def seeded_order(requests: Sequence[Any], seed: int) -> list[int]:
    """Request indices, images in a seeded order, each image's questions together (as MME)."""
    by_image: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_image.setdefault(r.image_key, []).append(i)
    groups = list(by_image.values())
    random.Random(seed).shuffle(groups)
    return [i for group in groups for i in group]


def token_counts(
    processor: Any, requests: Sequence[Any], image_token: str, system: bool
) -> dict[str, Any]:
    """Image and prompt tokens per request as the processor expands them (at most 32 images)."""
    from iaa_eval.models.vlm import render_prompt

    token = processor.tokenizer.convert_tokens_to_ids(image_token)
    seen: dict[str, Any] = {}
    for r in requests:
        seen.setdefault(r.image_key, r)
    images, prompts = [], []
    for r in list(seen.values())[:32]:
        text = render_prompt(processor, r.prompt, True, system)
        ids = processor(images=[r.image], text=[text], return_tensors="pt")["input_ids"][0]
        images.append(int((ids == token).sum()))
        prompts.append(len(ids))
    sizes = [r.image.size for r in seen.values()]
    return {
        "images_counted": len(images),
        "image_tokens_mean": sum(images) / len(images),
        "image_tokens_min": min(images),
        "image_tokens_max": max(images),
        "prompt_tokens_mean": sum(prompts) / len(prompts),
        "image_pixels_mean": sum(w * h for w, h in sizes) / len(sizes),
    }


# --------------------------------------------------------------------------- timing


class Clock:
    """Deadlines for a model's phases: each gets its weight's share of the time left when it
    starts, so time a phase leaves unused goes to the next ones."""

    def __init__(self, end: float, weights: dict[str, float]) -> None:
        self.end, self.weights = end, dict(weights)

    def phase(self, name: str) -> float:
        left = sum(self.weights.values())
        share = self.weights.pop(name) / left
        return time.perf_counter() + share * max(0.0, self.end - time.perf_counter())


def _timed(device: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work()``'s result with its wall time and peak GPU memory; an exception (out of memory) is
    recorded and the bench goes on."""
    mmlu_gpu.sync(device)
    suite_gpu._cuda_peak(device, reset=True)
    start = time.perf_counter()
    try:
        out = work()
    except Exception as exc:  # noqa: BLE001 - recorded: a failing configuration is a result
        return {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"}
    mmlu_gpu.sync(device)
    wall = time.perf_counter() - start
    done = len(out["answers"])
    return {
        **out,
        "requests": done,
        "wall_s": wall,
        "requests_per_s": done / wall if wall else None,
        "mme_full_s_extrapolated": MME_QUESTIONS * wall / done if done else None,
        "peak_gpu_gib": suite_gpu._cuda_peak(device),
    }


@contextlib.contextmanager
def counting_shared_prefills() -> Iterator[list[int]]:
    """The adapter's shared-prefix prefills while the block runs (their rows, one entry per
    batch that shared its image heads): whether the shared prefix engaged, not only was allowed."""
    from iaa_eval.models import vlm

    rows: list[int] = []
    prefill = vlm.prefill_shared

    def counted(model: Any, batch_rows: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        rows.append(len(batch_rows))
        return prefill(model, batch_rows, *args, **kwargs)

    vlm.prefill_shared = counted
    try:
        yield rows
    finally:
        vlm.prefill_shared = prefill


def run_ours(
    adapter: Any,
    requests: Sequence[Any],
    deadline: float,
    device: str,
    use_feature_cache: bool = True,
) -> dict[str, Any]:
    """``adapter.generate`` on ``tasks.multimodal.CHUNK`` requests at a time, as the MME task
    calls it, until done or ``deadline`` (a started call finishes)."""
    from iaa_eval.tasks.multimodal import CHUNK

    def work() -> dict[str, Any]:
        answers: list[str] = []
        with counting_shared_prefills() as shared:
            for start in range(0, len(requests), CHUNK):
                if answers and time.perf_counter() > deadline:
                    break
                answers += adapter.generate(requests[start : start + CHUNK], use_feature_cache)
        cache = adapter.feature_cache
        return {
            "answers": answers,
            "batch_size": adapter.batcher.size,
            "shared_prefix_batches": len(shared),
            "shared_prefix_rows": sum(shared),
            "feature_cache": None
            if cache is None
            else {"hits": cache.hits, "misses": cache.misses},
        }

    return _timed(device, work)


def _messages(prompt: str, system: bool) -> list[dict[str, Any]]:
    from iaa_eval.models.templates import SYSTEM_PROMPT

    head = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}]
    user = [{"type": "image"}, {"type": "text", "text": prompt}]
    return [*(head if system else []), {"role": "user", "content": user}]


def _chat(processor: Any, messages: list[dict[str, Any]]) -> str:
    """The processor's ``apply_chat_template`` (lmms-eval's call); without torchvision some
    processors' version reads their absent video processor: then the tokenizer renders the
    processor's template."""
    try:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except (AttributeError, TypeError, ImportError):
        return processor.tokenizer.apply_chat_template(
            messages,
            chat_template=processor.chat_template,
            add_generation_prompt=True,
            tokenize=False,
        )


def plain_generate(
    model: Any,
    processor: Any,
    chunk: Sequence[Any],
    system: bool,
) -> list[list[int]]:
    """lmms-eval's loop: chat template, processor (left padding), greedy ``generate``; each row's
    new token ids up to its EOS."""
    import torch

    texts = [_chat(processor, _messages(r.prompt, system)) for r in chunk]
    inputs = processor(
        images=[r.image for r in chunk], text=texts, return_tensors="pt", padding=True
    )
    inputs = inputs.to(model.device, model.dtype)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
    eos = model.generation_config.eos_token_id
    rows = []
    for row in out[:, inputs["input_ids"].shape[1] :].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def run_plain(
    model: Any,
    processor: Any,
    requests: Sequence[Any],
    batch: int,
    system: bool,
    deadline: float,
    device: str,
) -> dict[str, Any]:
    """:func:`plain_generate` at ``batch`` after one warm-up batch, until done or ``deadline``."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"

    def work() -> dict[str, Any]:
        ids: list[list[int]] = []
        for start in range(0, len(requests), batch):
            if ids and time.perf_counter() > deadline:
                break
            ids += plain_generate(model, processor, requests[start : start + batch], system)
        return {
            "batch": batch,
            "answers": [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)],
            "token_ids": ids,
        }

    try:  # warm-up: kernels and allocator, as lmms-eval's first batch pays
        plain_generate(model, processor, requests[:batch], system)
    except Exception as exc:  # noqa: BLE001 - an out-of-memory batch is a result
        return {"batch": batch, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"batch": batch, **_timed(device, work)}


def agreement(
    ours: Sequence[str], plain: Sequence[str], prompts: Sequence[str], tokenizer: Any
) -> dict[str, Any]:
    """How many answers are identical; each difference with its first diverging token (answers
    re-tokenized; ids past the tokenizer's vocabulary decode to nothing)."""
    n = min(len(ours), len(plain))
    diffs = []
    for i in range(n):
        if ours[i] == plain[i]:
            continue
        a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (ours[i], plain[i]))
        at = next(
            (j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        diffs.append(
            {
                "index": i,
                "prompt": prompts[i],
                "ours": ours[i],
                "plain": plain[i],
                "first_diverging_token": {
                    "position": at,
                    "ours": _token(tokenizer, a, at),
                    "plain": _token(tokenizer, b, at),
                },
            }
        )
    return {
        "compared": n,
        "identical": n - len(diffs),
        "fraction_identical": (n - len(diffs)) / n if n else None,
        "differences": diffs[:20],
    }


def _token(tokenizer: Any, ids: list[int], at: int) -> str | None:
    return tokenizer.convert_ids_to_tokens(ids[at]) if at < len(ids) else None


def _answers(run: dict[str, Any]) -> list[str]:
    return run.get("answers", [])


def measure(
    shape: Shape,
    args: argparse.Namespace,
    requests: list[Any],
    texts: list[str],
    end: float,
    work: Path,
) -> dict[str, Any]:
    """Build one model, time ours and plain ``generate``, compare answers; within ``end``."""
    from iaa_eval.models.base import ModelSpec
    from iaa_eval.models.vlm import VLMModel
    from iaa_eval.models.vlm_families import FAMILIES

    family = FAMILIES[shape.model_type]
    report: dict[str, Any] = {"model": shape.label, "model_type": shape.model_type}
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix=f"{shape.model_type}-", dir=work))
    model, processor = build(shape, texts, args.tiny, args.device, args.seed + 1, folder)
    mmlu_gpu.sync(args.device)
    report["build_s"] = time.perf_counter() - start
    report["parameters"] = sum(p.numel() for p in model.parameters())
    report["parameters_real_shape"] = real_parameters(shape)
    report["processor"] = type(processor).__name__
    report["image_processor"] = type(processor.image_processor).__name__
    report["tokenizer_size"] = len(processor.tokenizer)
    report["tokens"] = token_counts(processor, requests, shape.image_token, family.system_prompt)
    print(
        f"{shape.label}: built in {report['build_s']:.1f}s, {report['parameters']:,} parameters "
        f"({report['parameters_real_shape']:,} real shape); {report['tokens']}",
        flush=True,
    )

    order = seeded_order(requests, args.seed)
    plain_set = [requests[i] for i in order[: args.plain_requests]]
    prompts = [r.prompt for r in plain_set]
    dtype = "float32" if args.device == "cpu" else "bfloat16"
    spec = ModelSpec(
        name=shape.model_type,
        kind="vlm",
        path=str(folder),
        device=args.device,
        dtype=dtype,
        batch_size="auto",
    )
    clock = Clock(end, {"ours": 3, "plain_1": 2, "variants": 1.5, "plain_n": 3.5})

    def adapter() -> Any:
        return VLMModel.from_model(spec, model, processor)

    adapter().generate(requests[:2])  # warm-up: kernels and allocator (its own feature cache)
    # ours on the plain set first (same images), then on the rest: the agreement never waits
    # on the deadline, and every request is timed once
    ours_order = [requests[i] for i in order]
    report["ours"] = run_ours(adapter(), ours_order, clock.phase("ours"), args.device)
    print(f"  ours: {_summary(report['ours'])}", flush=True)
    report["plain"] = [
        run_plain(
            model,
            processor,
            plain_set,
            1,
            family.system_prompt,
            clock.phase("plain_1"),
            args.device,
        )
    ]
    print(f"  plain batch 1: {_summary(report['plain'][0])}", flush=True)
    tokenizer = processor.tokenizer
    report["agreement"] = {
        "ours_vs_plain_batch_1": agreement(
            _answers(report["ours"]), _answers(report["plain"][0]), prompts, tokenizer
        )
    }
    deadline = clock.phase("variants")
    variants: dict[str, Any] = {}
    if family.no_shared_prefix:
        variants["no_shared_prefix"] = {"skipped": f"off for the family: {family.no_shared_prefix}"}
    else:
        no_share = adapter()
        no_share.share_prefixes = False
        variants["no_shared_prefix"] = run_ours(no_share, plain_set, deadline, args.device)
    variants["pixels"] = run_ours(
        adapter(), plain_set, deadline, args.device, use_feature_cache=False
    )
    report["ours_variants"] = variants
    for name, run in variants.items():
        if "answers" in run:
            report["agreement"][f"ours_{name}_vs_plain_batch_1"] = agreement(
                _answers(run), _answers(report["plain"][0]), prompts, tokenizer
            )
            report["agreement"][f"ours_vs_ours_{name}"] = agreement(
                _answers(report["ours"]), _answers(run), prompts, tokenizer
            )
    batches = [b for b in args.plain_batches if b != 1]
    share = clock.phase("plain_n")
    for n, batch in enumerate(batches):
        deadline = time.perf_counter() + (share - time.perf_counter()) / (len(batches) - n)
        picked = [requests[i] for i in order[: max(args.plain_requests, 2 * batch)]]
        report["plain"].append(
            run_plain(model, processor, picked, batch, family.system_prompt, deadline, args.device)
        )
        print(f"  plain batch {batch}: {_summary(report['plain'][-1])}", flush=True)
        report["agreement"][f"plain_batch_{batch}_vs_plain_batch_1"] = agreement(
            _answers(report["plain"][-1]), _answers(report["plain"][0]), prompts, tokenizer
        )
    ok = [r for r in report["plain"] if r.get("requests_per_s")]
    best = max(ok, key=lambda r: r["requests_per_s"], default=None)
    ours_rate = report["ours"].get("requests_per_s")
    report["summary"] = {
        "ours_requests_per_s": ours_rate,
        "plain_batch_1_requests_per_s": report["plain"][0].get("requests_per_s"),
        "plain_best_batch": best and best["batch"],
        "plain_best_requests_per_s": best and best["requests_per_s"],
        "speedup_vs_batch_1": _ratio(ours_rate, report["plain"][0].get("requests_per_s")),
        "speedup_vs_best": _ratio(ours_rate, best and best["requests_per_s"]),
        "agreement_vs_batch_1": report["agreement"]["ours_vs_plain_batch_1"]["fraction_identical"],
        "mme_full_s_extrapolated": {
            "ours": report["ours"].get("mme_full_s_extrapolated"),
            "plain_batch_1": report["plain"][0].get("mme_full_s_extrapolated"),
            "plain_best": best and best["mme_full_s_extrapolated"],
        },
    }
    for run in [report["ours"], *variants.values(), *report["plain"]]:
        run.pop("token_ids", None)
        if "answers" in run:
            run["answers"] = run["answers"][: args.keep_answers]
    report["measure_s"] = time.perf_counter() - start
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _summary(run: dict[str, Any]) -> str:
    if "error" in run:
        return run["error"]
    return (
        f"{run['requests']} requests in {run['wall_s']:.1f}s = {run['requests_per_s']:.2f}/s, "
        f"peak {run['peak_gpu_gib'] or 0:.1f} GiB"
    )


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="folder with mme/ground_truth (made-up questions when absent)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "vlm_generate_gpu.json"
    )
    parser.add_argument("--models", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument(
        "--images",
        type=int,
        default=150,
        help="seeded subset of MME's 1,187 images (2 questions each)",
    )
    parser.add_argument(
        "--plain-requests",
        type=int,
        default=32,
        help="requests for plain generate at batch 1 (and the agreement)",
    )
    parser.add_argument("--plain-batches", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--keep-answers", type=int, default=64, help="answers kept in the JSON")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--deadline",
        type=float,
        default=540.0,
        help="seconds for the whole call, shared equally by the models",
    )
    parser.add_argument("--tiny", action="store_true", help="2-layer models on CPU, 3 images")
    args = parser.parse_args(argv)
    if 1 not in args.plain_batches:
        args.plain_batches.insert(0, 1)
    if args.tiny:
        args.device, args.images = "cpu", min(args.images, 3)
        args.plain_requests, args.plain_batches = min(args.plain_requests, 4), [1, 2]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, run :func:`measure_all` in a temporary folder; write and return the JSON report."""
    import torch

    args = parse(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU here (use --tiny for the CPU smoke test)")
    with tempfile.TemporaryDirectory(prefix="vlm-generate-") as tmp:
        return measure_all(args, Path(tmp))


def measure_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Synthesise MME under ``work``, then per model: build, time ours and plain, compare."""
    import torch
    import transformers

    clock = time.perf_counter()
    requests = mme_requests(args.source, work / "data", args.images, args.seed, args.tiny)
    texts = [r.prompt for r in requests]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "shapes": "tiny (2 layers, float32)" if args.tiny else "real, random bf16 weights",
        "work": {
            "images": len({r.image_key for r in requests}),
            "requests": len(requests),
            "seed": args.seed,
            "source": str(args.source),
            "max_new_tokens": MAX_NEW_TOKENS,
            "extrapolated_to": MME_QUESTIONS,
            "note": "rates measured on the seeded subsets; MME seconds = 2,374 / rate; every "
            "run asks in one seeded image order (an image's two questions together, as MME's "
            "loader), so the plain runs' requests are ours' first",
        },
        "synthesis_s": time.perf_counter() - clock,
        "models": {},
    }
    for n, name in enumerate(args.models):
        left = args.deadline - (time.perf_counter() - clock) - 5
        end = time.perf_counter() + left / (len(args.models) - n)
        report["models"][name] = measure(SHAPES[name], args, requests, texts, end, work)
        gc.collect()  # the model goes with measure's frame: free it before the next one
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        suite_gpu.write(report, args.out)
    report["wall_s"] = time.perf_counter() - clock
    suite_gpu.write(report, args.out)
    print(json.dumps({k: m["summary"] for k, m in report["models"].items()}, indent=1))
    print("->", args.out, flush=True)
    return report


if __name__ == "__main__":
    main()
