"""Host work overlapped with the device, or not: the A/B behind the image tasks' batching.

The suite's later H200 call (docs/benchmarks.md, "Raising the cap, overlapping the host") saw the
blind base 1.4-1.5x faster but LLaVA slower on MME and VQAv2 once batches grew from 64 to 256
rows and each batch's host work (tokenizing, image preprocessing) moved to a background thread.
This separates the candidates: the same random-weight 8B LLaVA (or IAA-14) answers VQAv2-shaped
requests (one question per distinct image) and MME-shaped ones (two per image), with images at
COCO's size (640x480, so preprocessing costs what it does on real data), for every combination
of ``--batches`` (``auto`` and fixed sizes) and the prepare thread on or off
(``GenerationBatcher.overlap``). It reports requests/s, the batch size used, peak memory, and
whether the thread changes any answer (it must not: the same batches, computed the same way).

    python bench/host_overlap_gpu.py --out $OUT/host_overlap_h200.json              # LLaVA
    python bench/host_overlap_gpu.py --family iaa --out $OUT/host_overlap_iaa.json
    python bench/host_overlap_gpu.py --tiny                                          # CPU, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("vision_cache_gpu", ROOT / "bench" / "vision_cache_gpu.py")
vision_cache_gpu = importlib.util.module_from_spec(_spec)
sys.modules["vision_cache_gpu"] = vision_cache_gpu
_spec.loader.exec_module(vision_cache_gpu)

from iaa_eval.models.base import MMRequest  # noqa: E402
from iaa_eval.models.vision import FeatureCache, image_key  # noqa: E402


def workload(images: int, per_image: int, size: tuple[int, int], seed: int) -> list[MMRequest]:
    """``per_image`` questions about each of ``images`` random images of ``size`` (W, H)."""
    rng = np.random.default_rng(seed)
    objects, questions = vision_cache_gpu.OBJECTS, vision_cache_gpu.QUESTIONS
    requests = []
    for i in range(images):
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        key = image_key(image)
        requests += [MMRequest(questions[j % len(questions)].format(objects[(i + j) % len(objects)]),
                               image, key, max_new_tokens=16) for j in range(per_image)]
    return requests


def run(adapter: Any, requests: list[MMRequest], batch: int | str, overlap: bool,
        device: str) -> dict[str, Any]:
    """One combination, from a cold feature cache; the batcher sized as ``--batch-size`` would."""
    adapter.batcher = type(adapter.batcher)(batch, adapter.model, kv_layers=adapter.batcher.kv_layers)
    adapter.batcher.overlap = overlap
    adapter.feature_cache = FeatureCache(adapter._encode_images)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    answers = adapter.generate(requests)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"batch": batch, "overlap": overlap, "rows": adapter.batcher.size, "seconds": seconds,
            "requests_per_s": len(requests) / seconds, "answers": answers,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: the smoke test")
    parser.add_argument("--family", choices=["llava", "iaa"], default="llava")
    parser.add_argument("--images", type=int, default=None, help="VQAv2-shaped images (default 512)")
    parser.add_argument("--batches", nargs="*", default=["auto", "64"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    build = vision_cache_gpu.build_iaa_adapter if args.family == "iaa" else vision_cache_gpu.build_adapter
    adapter = build("tiny" if args.tiny else "real", device, dtype, 8)
    images = args.images or (6 if args.tiny else 512)
    shapes = {"vqav2": workload(images, 1, (640, 480), seed=0),
              "mme": workload(images // 2, 2, (640, 480), seed=1)}
    adapter.generate(shapes["vqav2"][:8])  # warm-up: kernels, allocator
    batches = [b if b == "auto" else int(b) for b in args.batches]
    results: dict[str, list[dict[str, Any]]] = {}
    for name, requests in shapes.items():
        runs = [run(adapter, requests, batch, overlap, device)
                for batch in batches for overlap in (True, False)]
        for threaded, inline in zip(runs[::2], runs[1::2], strict=True):
            threaded["answers_equal_inline"] = threaded["answers"] == inline["answers"]
        for entry in runs:
            print(f"{name}: batch {entry['batch']} ({entry['rows']} rows), overlap "
                  f"{entry['overlap']}: {entry['requests_per_s']:.2f} requests/s", flush=True)
        results[name] = [{k: v for k, v in e.items() if k != "answers"} for e in runs]
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "family": args.family, "shape": "tiny" if args.tiny else "real (8B, random bf16)",
              "requests": {name: len(r) for name, r in shapes.items()}, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
