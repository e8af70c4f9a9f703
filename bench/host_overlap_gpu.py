"""Host work overlapped with the device, or not: the A/B behind the image tasks' batching.

The suite's later H200 call (docs/benchmarks.md, "Raising the cap, overlapping the host") saw the
blind base 1.4-1.5x faster but LLaVA slower on MME and VQAv2 once batches grew from 64 to 256
rows and each batch's host work (tokenizing, image preprocessing) moved to a background thread.
This separates the candidates: the same random-weight 8B LLaVA (or IAA-14) answers VQAv2-shaped
requests (one question per distinct image) and MME-shaped ones (two per image), with images at
COCO's size (640x480, so preprocessing costs what it does on real data), for every combination
of ``--batches`` (``auto`` and fixed sizes) and the prepare thread off or on
(``GenerationBatcher.overlap``), on under each of ``--switch-intervals`` (how long Python lets one
thread hold the GIL before another may take it). It reports requests/s, the batch size used, the
time the device side waited for the host (``host_wait_s``) out of the host's work
(``host_work_s``), peak memory, and whether the thread
changes any answer (it must not: the same batches, computed the same way). ``--profile`` adds one
run per shape under ``torch.profiler``: host and device seconds in each stage of the calling
thread (image encoding, shared-head prefill, generate) and the busiest kernels.

    python bench/host_overlap_gpu.py --profile --deadline 480 --out $OUT/host_overlap_h200.json
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


STAGES = ("iaa_eval.encode_images", "iaa_eval.prefill_shared",
          "iaa_eval.generate")


def run(adapter: Any, requests: list[MMRequest], batch: int | str, overlap: bool,
        switch: float | None, device: str) -> dict[str, Any]:
    """One combination, from a cold feature cache; the batcher sized as ``--batch-size`` would.
    ``switch``: the interpreter's thread switch interval while it runs (Python's default 5 ms is
    how long the decode loop may wait for the GIL when the prepare thread holds it)."""
    adapter.batcher = type(adapter.batcher)(batch, adapter.model, kv_layers=adapter.batcher.kv_layers)
    adapter.batcher.overlap = overlap
    adapter.feature_cache = FeatureCache(adapter._encode_images)
    default = sys.getswitchinterval()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    sys.setswitchinterval(switch or default)
    try:
        start = time.perf_counter()
        answers = adapter.generate(requests)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        sys.setswitchinterval(default)
    return {"batch": batch, "overlap": overlap, "switch_interval_s": switch or default,
            "rows": adapter.batcher.size, "seconds": seconds,
            "host_wait_s": adapter.batcher.host_seconds,
            "host_work_s": adapter.batcher.prepare_seconds,
            "requests_per_s": len(requests) / seconds, "answers": answers,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


def profiled(adapter: Any, requests: list[MMRequest], device: str) -> dict[str, Any]:
    """One ``auto`` run with the prepare thread under ``torch.profiler``: host and device time in
    each of our stages (:data:`STAGES`) and the device's busiest kernels. Device time below host
    time in ``iaa_eval.generate`` means decoding waits on the host (kernel launches, the GIL)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        entry = run(adapter, requests, "auto", True, None, device)
    events = prof.key_averages()
    stages = {e.key: {"calls": e.count, "host_s": e.cpu_time_total / 1e6,
                      "device_s": e.device_time_total / 1e6} for e in events if e.key in STAGES}
    kernels = sorted((e for e in events if e.device_time_total and e.key not in STAGES),
                     key=lambda e: e.self_device_time_total, reverse=True)[:12]
    entry.pop("answers")
    return {**entry, "stages": stages,
            "device_busy_s": sum(e.self_device_time_total for e in events) / 1e6,
            "top_kernels": [{"name": e.key[:120], "calls": e.count,
                             "device_s": e.self_device_time_total / 1e6} for e in kernels]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: the smoke test")
    parser.add_argument("--family", choices=["llava", "iaa"], default="llava")
    parser.add_argument("--images", type=int, default=None, help="VQAv2-shaped images (default 512)")
    parser.add_argument("--batches", nargs="*", default=["auto", "64"])
    parser.add_argument("--switch-intervals", nargs="*", type=float, default=[0.005, 0.0005],
                        help="thread switch intervals (s) to run the prepare thread under")
    parser.add_argument("--profile", action="store_true",
                        help="one more run per shape under torch.profiler: time per stage")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after which no new run starts (the report keeps what ran)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    build = vision_cache_gpu.build_iaa_adapter if args.family == "iaa" else vision_cache_gpu.build_adapter
    adapter = build("tiny" if args.tiny else "real", device, dtype, 8)
    images = args.images or (6 if args.tiny else 512)
    shapes = {"vqav2": workload(images, 1, (640, 480), seed=0),
              "mme": workload(images // 2, 2, (640, 480), seed=1)}
    adapter.generate(shapes["vqav2"][:8])  # warm-up: kernels, allocator
    batches = [b if b == "auto" else int(b) for b in args.batches]
    combos = [(batch, False, None) for batch in batches]
    combos += [(batch, True, switch) for batch in batches for switch in args.switch_intervals]
    results: dict[str, list[dict[str, Any]]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    stopped = []
    for name, requests in shapes.items():
        runs = []
        for batch, overlap, switch in combos:
            if args.deadline is not None and time.perf_counter() - began > args.deadline:
                stopped.append(f"{name}: batch {batch}, overlap {overlap}, switch {switch}")
                continue
            entry = run(adapter, requests, batch, overlap, switch, device)
            print(f"{name}: batch {entry['batch']} ({entry['rows']} rows), overlap "
                  f"{overlap} (switch {entry['switch_interval_s']}): "
                  f"{entry['requests_per_s']:.2f} requests/s, host wait "
                  f"{entry['host_wait_s']:.2f} s of {entry['host_work_s']:.2f} s", flush=True)
            runs.append(entry)
        inline = {r["batch"]: r["answers"] for r in runs if not r["overlap"]}
        for entry in runs:
            if entry["overlap"] and entry["batch"] in inline:
                entry["answers_equal_inline"] = entry["answers"] == inline[entry["batch"]]
        results[name] = [{k: v for k, v in e.items() if k != "answers"} for e in runs]
        if args.profile and not (args.deadline and time.perf_counter() - began > args.deadline):
            profiles[name] = profiled(adapter, requests, device)
            print(f"{name}: profiled stages {json.dumps(profiles[name]['stages'])}", flush=True)
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "family": args.family, "shape": "tiny" if args.tiny else "real (8B, random bf16)",
              "requests": {name: len(r) for name, r in shapes.items()}, "results": results,
              "profiles": profiles, "not_run_past_deadline": stopped}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
