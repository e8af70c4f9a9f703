"""Vision-feature cache on an MME-shaped workload: two questions per image, LLaVA-1.5-shaped model.

Builds a llava-hf model with random bf16 weights of real shapes (CLIP ViT-L/14-336 tower, 576
patches; Llama-3-8B language model) directly on the GPU, asks two yes/no questions per image
through the ``vlm`` adapter (the ``llava`` kind), and times generation three ways: the
processor's pixel path (each request encodes its image and runs its whole prompt), the per-run
feature cache alone (each image encoded once), and the adapter's default, the feature cache plus
the image's shared prompt prefix run once for both questions. Reports the end-to-end speed-ups, the
vision-stage speed-up (encoder time only) and whether answers agree. ``--family iaa`` times the
``iaa`` adapter on IAA-14 over the same shapes (MM workflow): feature cache alone against feature
cache plus shared prefix (its adapter has no pixel path to compare with).

    python bench/vision_cache_gpu.py --out bench/results/vision_cache_h100.json
    python bench/vision_cache_gpu.py --family iaa --out bench/results/vision_cache_iaa_h100.json
    python bench/vision_cache_gpu.py --tiny          # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.iaa.adapter import IAAModel
from iaa_eval.models.vision import FeatureCache
from iaa_eval.models.vlm import VLMModel

SHAPES = {
    "real": dict(
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768),
        text=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192),
    ),
    "tiny": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8, projection_dim=32),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=2048),
    ),
}
QUESTIONS = ("Is there a {} in the image? Please answer yes or no.", "Is the {} red? Please answer yes or no.")
OBJECTS = ("dog", "car", "tree", "cup", "boat", "clock", "chair", "bird")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE with an ``<image>`` token (the weights are random: any ids do)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [q.format(o) for q in QUESTIONS for o in OBJECTS] + ["USER: ASSISTANT: yes no"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 8, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=["<image>"])


def build_adapter(shape: str, device: str, dtype: torch.dtype, batch: int) -> VLMModel:
    """The ``vlm`` adapter around a random model built on ``device`` (no checkpoint on disk)."""
    sizes = SHAPES[shape]
    tokenizer = build_tokenizer()
    vision = CLIPVisionConfig(**sizes["vision"])
    patches = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(**sizes["text"]),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=patches)
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    side = vision.image_size
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tokenizer, patch_size=vision.patch_size, vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1,
    )
    spec = ModelSpec("llava", "llava", f"random-{shape}", device, str(dtype), batch)
    return VLMModel.from_model(spec, model, processor)


def build_iaa_adapter(shape: str, device: str, dtype: torch.dtype, batch: int) -> IAAModel:
    """The ``iaa`` adapter (MM workflow) around a random base + tower wrapped as IAA-14 on ``device``."""
    sizes = SHAPES[shape]
    tokenizer = build_tokenizer()
    side = sizes["vision"]["image_size"]
    torch.set_default_dtype(dtype)
    with torch.device(device):
        base = LlamaForCausalLM(LlamaConfig(**sizes["text"], tie_word_embeddings=False)).eval()
        tower = CLIPVisionModel(CLIPVisionConfig(**sizes["vision"])).eval()
        model = IAAForCausalLM.from_base(base, tower, positions="iaa-14" if shape == "real" else [0, 1],
                                         image_token_id=tokenizer.convert_tokens_to_ids("<image>")).eval()
    torch.set_default_dtype(torch.float32)
    spec = ModelSpec("iaa", "iaa", f"random-{shape}", device, str(dtype), batch)
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    adapter = IAAModel.from_model(spec, model, tokenizer, processor)
    return adapter


def workload(images: int, seed: int) -> list[MMRequest]:
    """MME-shaped: consecutive pairs of questions about the same image."""
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(images):
        size = (int(rng.integers(200, 640)), int(rng.integers(200, 640)))
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        requests += [MMRequest(q.format(OBJECTS[i % len(OBJECTS)]), image, f"img{i}", max_new_tokens=4)
                     for q in QUESTIONS]
    return requests


def timed(fn, device: str) -> tuple[float, object]:  # noqa: ANN001
    """Wall time of ``fn()`` with the device synchronised."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> dict:
    """Measure, print and return the JSON summary (and write it with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--images", type=int, default=None, help="default 64 (tiny: 4)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--family", choices=["llava", "iaa"], default="llava")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    build = build_iaa_adapter if args.family == "iaa" else build_adapter
    adapter = build("tiny" if args.tiny else "real", device, dtype, args.batch)
    requests = workload(args.images or (4 if args.tiny else 64), seed=0)
    adapter.generate(requests[: args.batch])  # warm-up (kernels, allocator)
    adapter.feature_cache = FeatureCache(adapter._encode_images)
    encode_calls: list[float] = []
    encode = adapter._encode_images

    def counted(images: list) -> torch.Tensor:
        seconds, out = timed(lambda: encode(images), device)
        encode_calls.append(seconds)
        return out

    adapter.feature_cache.encode = counted
    shared_s, shared = timed(lambda: adapter.generate(requests), device)
    vision_cached_s = sum(encode_calls)
    hits, misses = adapter.feature_cache.hits, adapter.feature_cache.misses
    adapter.feature_cache = FeatureCache(adapter._encode_images)
    adapter.share_prefixes = False
    cached_s, cached = timed(lambda: adapter.generate(requests), device)
    if args.family == "iaa":
        return report({
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "shape": "tiny" if args.tiny else "IAA-14 on CLIP ViT-L/14-336 + Llama-3-8B (random bf16), MM workflow",
            "requests": len(requests), "images": len(requests) // 2, "batch": args.batch, "max_new_tokens": 4,
            "feature_cache_s": cached_s, "feature_cache_shared_prefix_s": shared_s,
            "shared_prefix_speedup": cached_s / shared_s,
            "answers_agree": sum(a == b for a, b in zip(shared, cached, strict=True)) / len(requests),
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        }, args.out)
    uncached_s, uncached = timed(lambda: adapter.generate(requests, use_feature_cache=False), device)
    single_encode_s = vision_cached_s / max(1, misses)
    return report({
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "shape": "tiny" if args.tiny else "CLIP ViT-L/14-336 + Llama-3-8B (random bf16)",
        "requests": len(requests), "images": len(requests) // 2, "batch": args.batch, "max_new_tokens": 4,
        "pixel_path_s": uncached_s, "feature_cache_s": cached_s, "feature_cache_shared_prefix_s": shared_s,
        "end_to_end_speedup": uncached_s / shared_s, "feature_cache_only_speedup": uncached_s / cached_s,
        "cache_hits": hits, "cache_misses": misses,
        "vision_s_cached": vision_cached_s,
        "vision_s_uncached_estimate": single_encode_s * len(requests),
        "vision_stage_speedup": len(requests) / max(1, misses),
        "answers_agree": sum(a == b for a, b in zip(shared, uncached, strict=True)) / len(requests),
        "answers_agree_feature_cache_only": sum(a == b for a, b in zip(cached, uncached, strict=True)) / len(requests),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }, args.out)


def report(result: dict, out: Path | None) -> dict:
    """Print the JSON summary, write it to ``out`` if given, return it."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
