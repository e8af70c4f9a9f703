"""Time IAA's MM workflow against its text workflow on a Llama-3-8B-shaped random model.

The MM workflow runs 32 + 14 decoder layers per token (IAA-14), the text workflow 32: the
decoder-FLOP prediction is 46 / 32 = 1.44x. This measures prefill throughput, per-token decode
latency and peak memory of both, on random bf16 weights built directly on the GPU (no 16 GB CPU
init). ``--tiny`` runs a 32-layer hidden-32 model on CPU in seconds (a smoke test of the script).

    python bench/iaa_workflows_gpu.py --out bench/results/iaa_workflows_h100.json
    python bench/iaa_workflows_gpu.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
)

from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.parameters import parameter_counts

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=32, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, rope_theta=500000.0, max_position_embeddings=4096),
}
VISION = {
    "llama3-8b": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=336, patch_size=14),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                 patch_size=8),
}


def build(shape: str, device: str, dtype: torch.dtype) -> IAAForCausalLM:
    """Random base + IAA-14 (MM branch) created on ``device`` in ``dtype`` directly."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            text = LlamaConfig(**SHAPES[shape], tie_word_embeddings=False, attn_implementation="sdpa")
            base = LlamaForCausalLM(text).eval()
            clip = CLIPVisionModel(CLIPVisionConfig(**VISION[shape])).eval()
            return IAAForCausalLM.from_base(base, clip, positions="iaa-14").eval()
    finally:
        torch.set_default_dtype(previous)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, warmup: int, iters: int) -> float:
    """Median seconds of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


@torch.inference_mode()
def measure(model: IAAForCausalLM, workflow: str, args: argparse.Namespace) -> dict[str, float | None]:
    """Prefill of ``prompt_len`` tokens, then ``decode_tokens`` single-token steps on that cache."""
    device = args.device
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(3, vocab, (args.batch, args.prompt_len), device=device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    def prefill() -> DynamicCache:
        cache = DynamicCache()
        model(ids, workflow=workflow, cache=cache, use_cache=True, logits_to_keep=1)
        return cache

    prefill_s = timed(prefill, device, args.warmup, args.iters)
    step = torch.randint(3, vocab, (args.batch, 1), device=device)

    def decode() -> None:
        cache = prefill()
        sync(device)
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            model(step, workflow=workflow, cache=cache, use_cache=True, logits_to_keep=1)
        sync(device)
        decode_times.append((time.perf_counter() - start) / args.decode_tokens)

    decode_times: list[float] = []
    for _ in range(max(1, args.iters // 3) + 1):
        decode()
    decode_s = sorted(decode_times[1:] or decode_times)[len(decode_times[1:] or decode_times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"prefill_ms": prefill_s * 1e3, "prefill_tokens_per_s": args.batch * args.prompt_len / prefill_s,
            "decode_ms_per_token": decode_s * 1e3, "peak_memory_gib": peak}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny 32-layer model (CPU smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=None, help="default: 2048 (tiny: 64)")
    parser.add_argument("--decode-tokens", type=int, default=None, help="default: 128 (tiny: 8)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    shape = "tiny" if args.tiny else "llama3-8b"
    args.prompt_len = args.prompt_len or (64 if args.tiny else 2048)
    args.decode_tokens = args.decode_tokens or (8 if args.tiny else 128)
    if args.tiny:
        args.warmup, args.iters = min(args.warmup, 1), min(args.iters, 2)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))

    model = build(shape, args.device, dtype)
    counts = parameter_counts(model)
    results = {w: measure(model, w, args) for w in ("text", "mm")}
    layers = model.config.text_config.num_hidden_layers
    report = {
        "shape": shape, "device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else None, "dtype": str(dtype), "batch": args.batch, "prompt_len": args.prompt_len,
        "decode_tokens": args.decode_tokens, "insert_after_layers": model.config.insert_after_layers,
        "params": {"base": counts.base, "added": counts.added, "vision": counts.vision},
        "predicted_decoder_ratio": (layers + len(model.config.insert_after_layers)) / layers,
        "workflows": results,
        "ratio_mm_over_text": {
            "prefill_time": results["mm"]["prefill_ms"] / results["text"]["prefill_ms"],
            "decode_latency": results["mm"]["decode_ms_per_token"] / results["text"]["decode_ms_per_token"],
        },
        "versions": {"torch": torch.__version__},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
