"""The whole forgetting suite at real size, timed end to end, beside the anchors' pipeline.

GPU (one H200; issue 16; the calls behind ``docs/benchmarks.md``, one device call each)::

    python bench/suite_gpu.py --source data --group text --anchor-text-limit 4 \
        --model-dirs /tmp /dev/shm --out $OUT/suite_text_h200.json --deadline 450
    python bench/suite_gpu.py --source data --group mm --mme-images 500 --mmbench-questions 350 \
        --vqav2-questions 1200 --mm-batches 1 32 128 --anchor-mm-requests 128 \
        --model-dirs /tmp /dev/shm --out $OUT/suite_mm_h200.json --deadline 585
    python bench/suite_gpu.py --combine bench/results/suite_text_h200.json \
        bench/results/suite_mm_h200.json --rate iaa/vqav2=21.9 --out bench/results/suite_h200.json

1. **Data** in the benchmarks' original layouts, written under ``--work`` from the question files
   in ``--source`` (``../shared/data``): MMLU test (5-shot, dev as shots), C-Eval val (5-shot),
   MME (the 14 subtask folders, images synthesised at typical sizes), MMBench-EN dev (the legacy
   TSV with a base64 image in every row) and VQAv2 (a seeded 5,000 of the validation questions,
   COCO-named images at COCO sizes). ``--mme-images`` / ``--mmbench-questions`` /
   ``--vqav2-questions`` / ``--text-per-subject`` take seeded subsets when the whole suite cannot
   fit one device call; the JSON records subset and full sizes, and the extrapolation.
2. **Models**, random weights of real shapes and fixed seeds, saved as a user has them: a
   Llama-3-8B-shaped base with a tokenizer (a byte-level BPE trained on the prompts, with a
   Llama-3-style chat template: the real tokenizer cannot be downloaded here), a llava-hf LLaVA
   (CLIP ViT-L/14-336 tower, its own random language model: a fine-tuned LM differs from the
   base) and IAA-14 built on the base by ``IAAForCausalLM.from_base``.
3. **Ours**: ``python -m iaa_eval run --suite <forgetting's real tasks with data> --base --llava
   --iaa --data-dir ... --device cuda --batch-size auto`` in a subprocess, as a user runs it;
   per model and task: wall time (results.json), requests/s, peak GPU memory in use (sampled
   through NVML while the task ran), model loading time.
4. **Anchors**, in the same process and machine: lm-eval ``HFLM`` through lm-eval's
   ``evaluate`` on the same task YAMLs and files (fixed batches and ``auto``) for the text tasks,
   plain transformers ``generate`` with the llava-hf processor (lmms-eval's ``llava_hf``: chat
   template, processor, greedy ``generate``) at batch 1 and larger batches for the multimodal
   ones, on seeded subsets; rates extrapolated to the full task sizes.

``--tiny`` runs everything at tiny shapes (CPU unless ``--device cuda``): the smoke test.
The GPU machine lacks lm-eval: carry wheels (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import gc
import gzip
import importlib.util
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("mmlu_gpu", ROOT / "bench" / "mmlu_gpu.py")
mmlu_gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mmlu_gpu)

TEXT_TASKS, MM_TASKS = ("mmlu", "ceval"), ("mme", "mmbench_en", "vqav2")
FULL_SIZES = {"mme": 2374, "mmbench_en": 4377, "vqav2": 5000}  # MMLU, C-Eval: counted in the files
CLIP_L336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)
TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
    projection_dim=32,
)
# MME's release layout: these subtasks keep images/ and questions_answers_YN/, the rest are flat;
# the cognition subtasks ship PNG screenshots.
MME_NESTED = {"artwork", "celebrity", "landmark", "posters", "scene"}
MME_PNG = {"code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation"}
SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>"]
CHAT_TEMPLATE = (  # Llama-3 turns; content is a string (tokenizer) or a typed list (processor)
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
MM_PROMPTS = {  # what lmms-eval asks (and our tasks ask): see iaa_eval/tasks/{mme,mmbench,vqav2}.py
    "mme": "{question}",
    "mmbench_en": "{question}\n{options}\n"
    "Answer with the option's letter from the given choices directly.",
    "vqav2": "{question}\nAnswer the question using a single word or phrase.",
}


# --------------------------------------------------------------------------- data


def _image(args: tuple[str, int, int, int]) -> None:
    """A smooth random picture (upsampled colour noise: compresses like a photo) at ``path``."""
    import numpy as np
    from PIL import Image

    path, width, height, seed = args
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    image = small.resize((width, height), Image.BICUBIC)
    image.save(path, quality=90) if path.endswith(".jpg") else image.save(path)


def _draw(jobs: list[tuple[str, int, int, int]]) -> None:
    if len(jobs) < 64:
        for job in jobs:
            _image(job)
        return
    with ProcessPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(_image, jobs, chunksize=32))


def _side(rng: random.Random, low: int, high: int, tiny: bool) -> int:
    return rng.randrange(24, 48) if tiny else rng.randrange(low, high)


def write_text(
    source: Path, out: Path, layout: str, per_subject: int | None, subjects: int | None
) -> tuple[int, int]:
    """MMLU (``original_layout/data``) or C-Eval files, every subject or the first ``subjects``,
    each eval split cut to its first ``per_subject`` rows; returns the questions written and all."""
    root = source / "mmlu" / "original_layout" / "data" if layout == "mmlu" else source / "ceval"
    split = "test" if layout == "mmlu" else "val"
    names = sorted(
        p.name.removesuffix(f"_{split}.csv") for p in (root / split).glob(f"*_{split}.csv")
    )
    written = total = 0
    for subject in names[:subjects]:
        shutil.copytree(
            root / "dev",
            out / "dev",
            dirs_exist_ok=True,
            ignore=lambda _, files, s=subject: [f for f in files if f != f"{s}_dev.csv"],
        )
        with (root / split / f"{subject}_{split}.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        header, body = (rows[:1], rows[1:]) if layout == "ceval" else ([], rows)
        total += len(body)
        body = body[:per_subject]
        (out / split).mkdir(parents=True, exist_ok=True)
        with (out / split / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(header + body)
        written += len(body)
    if layout == "ceval":
        shutil.copy(root / "subject_mapping.json", out / "subject_mapping.json")
    return written, total


def write_mme(source: Path, out: Path, images: int | None, seed: int, tiny: bool) -> list[dict]:
    """MME's 14 subtask folders; a seeded ``images`` of the 1,187 images (all by default)."""
    rng = random.Random(seed)
    by_image: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
    for txt in sorted((source / "mme" / "ground_truth").glob("*.txt")):
        for line in txt.read_text(encoding="utf-8").splitlines():
            if line.strip():
                name, question, answer = line.split("\t")[:3]
                by_image[(txt.stem, name)].append([question, answer])
    keys = sorted(by_image)
    keys = sorted(rng.sample(keys, images)) if images is not None and images < len(keys) else keys
    jobs, requests = [], []
    for n, (subtask, name) in enumerate(keys):
        stem = Path(name).stem
        ext = ".png" if subtask in MME_PNG else ".jpg"
        image_dir = out / subtask / "images" if subtask in MME_NESTED else out / subtask
        qa_dir = out / subtask / "questions_answers_YN" if subtask in MME_NESTED else out / subtask
        image_dir.mkdir(parents=True, exist_ok=True)
        qa_dir.mkdir(parents=True, exist_ok=True)
        rows = by_image[(subtask, name)]
        (qa_dir / f"{stem}.txt").write_text(
            "".join(f"{q}\t{a}\n" for q, a in rows), encoding="utf-8"
        )
        jobs.append(
            (
                str(image_dir / f"{stem}{ext}"),
                _side(rng, 400, 1400, tiny),
                _side(rng, 300, 1000, tiny),
                seed * 100_000 + n,
            )
        )
        requests += [
            {"prompt": MM_PROMPTS["mme"].format(question=q), "image": jobs[-1][0]} for q, _ in rows
        ]
    _draw(jobs)
    return requests


def write_mmbench(
    source: Path, out: Path, questions: int | None, seed: int, tiny: bool
) -> list[dict]:
    """The legacy MMBench-EN dev TSV with a base64 JPEG in every row (copies repeat it)."""
    import pandas as pd

    rng = random.Random(seed)
    frame = pd.read_csv(
        source / "mmbench" / "mmbench_dev_en_legacy_noimages.tsv",
        sep="\t",
        dtype=str,
        keep_default_na=False,
    )
    qid = frame["index"].astype(int) % 1_000_000
    ids = sorted(set(qid))
    if questions is not None and questions < len(ids):
        ids = sorted(rng.sample(ids, questions))
    frame = frame[qid.isin(ids)].copy()
    tmp = out / "images"
    tmp.mkdir(parents=True, exist_ok=True)
    jobs = [
        (
            str(tmp / f"{q}.jpg"),
            _side(rng, 300, 800, tiny),
            _side(rng, 200, 600, tiny),
            seed * 100_000 + q,
        )
        for q in ids
    ]
    _draw(jobs)
    encoded = {
        q: base64.b64encode(Path(path).read_bytes()).decode()
        for q, (path, *_) in zip(ids, jobs, strict=True)
    }
    shutil.rmtree(tmp)
    frame["image"] = [encoded[int(i) % 1_000_000] for i in frame["index"]]
    frame.to_csv(out / "mmbench_dev_en.tsv", sep="\t", index=False)
    requests = []
    for row in frame.to_dict("records"):
        options = "\n".join(f"{k}. {row[k]}" for k in "ABCD" if row.get(k))
        requests.append(
            {
                "prompt": MM_PROMPTS["mmbench_en"].format(
                    question=row["question"], options=options
                ),
                "image_b64": row["image"],
            }
        )
    return requests


def write_vqav2(source: Path, out: Path, questions: int, seed: int, tiny: bool) -> list[dict]:
    """The official questions + annotations JSON (val2014 names) and COCO-sized images."""
    rng = random.Random(seed)
    raw_q = json.loads(
        gzip.decompress((source / "vqav2" / "vqa_questions_valid.json.gz").read_bytes())
    )
    raw_a = json.loads(
        gzip.decompress((source / "vqav2" / "vqa_annotatons_valid.json.gz").read_bytes())
    )
    chosen = sorted(
        rng.sample(raw_q["questions"], min(questions, len(raw_q["questions"]))),
        key=lambda q: q["question_id"],
    )
    keep = {q["question_id"] for q in chosen}
    subtype = "val2014"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps({"data_subtype": subtype, "questions": chosen}), encoding="utf-8"
    )
    (out / "v2_mscoco_val2014_annotations.json").write_text(
        json.dumps(
            {
                "data_subtype": subtype,
                "annotations": [a for a in raw_a["annotations"] if a["question_id"] in keep],
            }
        ),
        encoding="utf-8",
    )
    jobs = {}
    for q in chosen:
        if q["image_id"] not in jobs:
            landscape = rng.random() < 0.75
            w, h = (
                (640, rng.choice((427, 480, 426, 360)))
                if landscape
                else (rng.choice((427, 480)), 640)
            )
            w, h = (_side(rng, 0, 1, True), _side(rng, 0, 1, True)) if tiny else (w, h)
            jobs[q["image_id"]] = (
                str(out / "images" / f"COCO_{subtype}_{q['image_id']:012d}.jpg"),
                w,
                h,
                seed * 1_000_000 + q["image_id"] % 1_000_000,
            )
    _draw(list(jobs.values()))
    return [
        {
            "prompt": MM_PROMPTS["vqav2"].format(question=q["question"]),
            "image": jobs[q["image_id"]][0],
        }
        for q in chosen
    ]


def synthesise(args: argparse.Namespace, data: Path, group: tuple[str, ...]) -> dict[str, Any]:
    """Every task's files in its original layout; returns sizes (subset and full) and the anchors'
    multimodal requests (prompt + image)."""
    tiny = args.tiny
    sizes, requests, full = {}, {}, {}
    for task in group:
        (data / task).mkdir(parents=True, exist_ok=True)
        if task in TEXT_TASKS:
            sizes[task], full[task] = write_text(
                args.source, data / task, task, args.text_per_subject, 3 if tiny else None
            )
        elif task == "mme":
            requests[task] = write_mme(args.source, data / task, args.mme_images, args.seed, tiny)
        elif task == "mmbench_en":
            requests[task] = write_mmbench(
                args.source, data / task, args.mmbench_questions, args.seed, tiny
            )
        else:
            requests[task] = write_vqav2(
                args.source, data / task, args.vqav2_questions, args.seed, tiny
            )
        if task in requests:
            sizes[task] = len(requests[task])
            full[task] = sizes[task] if tiny else FULL_SIZES[task]
    return {"sizes": sizes, "full_sizes": full, "requests": requests}


def corpus(data: Path) -> list[str]:
    """Every text of the written data (the tokenizer is trained on what it will see)."""
    texts = []
    for path in sorted(data.rglob("*")):
        if path.suffix == ".csv" or path.suffix == ".txt":
            texts.append(path.read_text(encoding="utf-8"))
        elif path.suffix == ".tsv":
            import pandas as pd

            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).drop(
                columns=["image"]
            )
            texts += frame.apply(" ".join, axis=1).tolist()
        elif path.name.endswith("questions.json"):
            texts += [
                q["question"] for q in json.loads(path.read_text(encoding="utf-8"))["questions"]
            ]
    return texts


# --------------------------------------------------------------------------- models


def build_tokenizer(texts: list[str], vocab: int) -> Any:
    """mmlu_gpu's byte-level BPE (BOS like Llama-3) plus Llama-3's chat tokens and ``<image>``."""
    tokenizer = mmlu_gpu.train_tokenizer(texts, vocab)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _shapes(tiny: bool) -> tuple[dict, dict]:
    return (mmlu_gpu.TINY, TINY_VISION) if tiny else (mmlu_gpu.LLAMA3_8B, CLIP_L336)


def _processor(tokenizer: Any, vision: dict) -> Any:
    from transformers import CLIPImageProcessor, LlavaProcessor

    side = vision["image_size"]
    return LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        ),
        tokenizer=tokenizer,
        patch_size=vision["patch_size"],
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def build_trio(tokenizer: Any, tiny: bool, device: str, seed: int) -> dict[str, Any]:
    """Base, LLaVA and IAA-14 (on the base): random weights, fixed seeds, built on ``device``."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from iaa_eval.models.iaa import IAAForCausalLM

    text, vision = _shapes(tiny)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    torch.manual_seed(seed)
    base = mmlu_gpu.build_model(text, device)
    llava_config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False),
        image_token_id=image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=patches,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed + 1)
    with torch.device(device):
        llava = LlavaForConditionalGeneration._from_config(llava_config, dtype=dtype).eval()
        torch.manual_seed(seed + 2)
        tower = CLIPVisionModel._from_config(CLIPVisionConfig(**vision), dtype=dtype).eval()
    iaa = IAAForCausalLM.from_base(
        base, tower, positions=[0, 1] if tiny else "iaa-14", image_token_id=image_id
    ).eval()
    return {"base": base, "llava": llava, "iaa": iaa, "processor": _processor(tokenizer, vision)}


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def save_trio(
    trio: dict[str, Any], tokenizer: Any, places: list[Path]
) -> tuple[dict[str, Path], dict[str, float]]:
    """Each model where it fits (disk or /dev/shm), as a user has it; folders and seconds."""
    folders, seconds = {}, {}
    for name in ("base", "llava", "iaa"):
        model = trio[name]
        need = 1.1 * sum(p.numel() * p.element_size() for p in model.parameters())
        roots = sorted((p for p in places if p.exists()), key=_free, reverse=True)
        root = next((p for p in roots if _free(p) > need), roots[0])
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        start = time.perf_counter()
        if name == "iaa":
            side = trio["processor"].image_processor
            model.save_pretrained(folder, tokenizer=tokenizer, image_processor=side)
        else:
            model.save_pretrained(folder)
            (trio["processor"] if name == "llava" else tokenizer).save_pretrained(folder)
        seconds[name] = time.perf_counter() - start
        folders[name] = folder
        print(f"saved {name} in {seconds[name]:.1f}s -> {folder}", flush=True)
    return folders, seconds


# --------------------------------------------------------------------------- ours (the CLI)


class MemorySampler(threading.Thread):
    """GPU memory in use (NVML, as nvidia-smi shows it) every 0.1 s, with timestamps."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.read = lambda: pynvml.nvmlDeviceGetMemoryInfo(self.handle).used
        except Exception:  # noqa: BLE001 - no NVML (CPU runs): no memory figures
            self.read = None

    def run(self) -> None:
        while self.read is not None and not self.stop.wait(0.1):
            self.samples.append((time.perf_counter(), self.read()))

    def peak_gib(self, start: float, end: float, baseline: int) -> float | None:
        values = [used for t, used in self.samples if start <= t <= end]
        return (max(values) - baseline) / 2**30 if values else None


def suite_file(work: Path, group: tuple[str, ...]) -> Path:
    """The forgetting suite's real tasks, those this run has data for (MMBench-CN has none)."""
    import yaml

    from iaa_eval.resources import SUITES

    suite = yaml.safe_load((SUITES / "forgetting.yaml").read_text(encoding="utf-8"))
    name = lambda t: t if isinstance(t, str) else t["task"]  # noqa: E731
    suite["real_tasks"] = [t for t in suite["real_tasks"] if name(t) in group]
    path = work / "forgetting_bench.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def timeline(events: list[tuple[float, str]]) -> tuple[dict, dict, dict]:
    """From our run's timed log lines: when each model began loading, each model/task's (start,
    end), and for image tasks the seconds generation waited for host work (the task's own line,
    logged just before its model/task line)."""
    loads, done, waits = {}, {}, {}
    wait = None
    for t, line in events:
        if m := re.search(r"loading (\w+) \(", line):
            loads[m.group(1)] = t
        elif m := re.search(r"\(([\d.]+)s of it waiting for host work", line):
            wait = float(m.group(1))
        elif m := re.search(r"(\w+)/(\w+): .* in ([\d.]+)s$", line):
            done[(m.group(1), m.group(2))] = (t - float(m.group(3)), t)
            if wait is not None:
                waits[(m.group(1), m.group(2))], wait = wait, None
    return loads, done, waits


def run_ours(
    args: argparse.Namespace,
    work: Path,
    data: Path,
    folders: dict[str, Path],
    group: tuple[str, ...],
    timeout: float,
) -> dict[str, Any]:
    """``iaa-eval run`` as a user types it; per model/task wall time, requests, peak memory."""
    command = [
        sys.executable,
        "-m",
        "iaa_eval",
        "run",
        "--suite",
        str(suite_file(work, group)),
        "--base",
        str(folders["base"]),
        "--llava",
        str(folders["llava"]),
        "--iaa",
        str(folders["iaa"]),
        *(x for t in group for x in ("--data-dir", f"{t}={data / t}")),
        "--device",
        args.device,
        "--batch-size",
        "auto",
        "--output-path",
        str(work / "runs"),
        "--run-id",
        "bench",
    ]
    if args.debug:
        command.insert(3, "--debug")  # a global flag: before the command
    env = {
        **os.environ,
        "TQDM_DISABLE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    sampler = MemorySampler()
    baseline = sampler.read() if sampler.read else 0
    sampler.start()
    events: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=work
    )
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    for line in proc.stdout:
        events.append((time.perf_counter(), line.rstrip()))
        print("  |", line.rstrip(), flush=True)
    code = proc.wait()
    killer.cancel()
    wall = time.perf_counter() - start
    sampler.stop.set()
    results_path = work / "runs" / "bench" / "results.json"
    results = (
        json.loads(results_path.read_text(encoding="utf-8"))
        if results_path.exists()
        else {"results": {}}
    )
    loads, done, waits = timeline(events)
    per_task = {}
    for model, tasks in results["results"].items():
        for task, result in tasks.items():
            t0, t1 = done.get((model, task), (start, start))
            count = result["requests"] if task in MM_TASKS else result["n"]
            shared = "shared_with" in result.get("task_config", {})
            per_task[f"{model}/{task}"] = {
                "wall_s": 0.0 if shared else result["wall_s"],
                "items": result["n"],
                "requests": count,
                "shared_with": result["task_config"].get("shared_with"),
                "items_per_s": None if shared else result["n"] / max(result["wall_s"], 1e-9),
                "peak_gpu_gib": sampler.peak_gib(t0, t1, baseline),
                "blind": result.get("blind", False),
                "host_wait_s": waits.get((model, task)),
            }
    load_s = {}
    for model, t in loads.items():
        starts = [
            done[(model, task.split("/")[1])][0]
            for task, r in per_task.items()
            if task.startswith(f"{model}/")
            and not r["shared_with"]
            and (model, task.split("/")[1]) in done
        ]
        load_s[model] = min(starts) - t if starts else None
    return {
        "command": " ".join(command),
        "exit_code": code,
        "wall_s": wall,
        "results_wall_s": results.get("wall_s"),
        "timed_out": wall >= timeout,
        "model_load_s": load_s,
        "tasks": per_task,
        "peak_gpu_gib": sampler.peak_gib(start, start + wall + 1, baseline),
        "log_tail": [line for _, line in events[-40:]] if code else [],
    }


# --------------------------------------------------------------------------- anchors


def _cuda_peak(device: str, reset: bool = False) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    if reset:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def anchor_text(
    model: Any,
    tokenizer: Any,
    data: Path,
    task: str,
    limit: int | None,
    batch: int | str,
    device: str,
) -> dict[str, Any]:
    """lm-eval's ``evaluate`` with ``HFLM`` on our task YAMLs and the same files."""
    from lm_eval.models.huggingface import HFLM

    from iaa_eval.tasks import TaskOptions
    from iaa_eval.tasks.text import evaluate_text
    from iaa_eval.tasks.text_configs import BENCHMARKS

    _cuda_peak(device, reset=True)
    options = TaskOptions(data_dir=data / task, limit=limit, num_fewshot=5, formulation="letter")
    start = time.perf_counter()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch, device=device)
        run = evaluate_text(lm, BENCHMARKS[task], options)
    except Exception as exc:  # noqa: BLE001 - a failing anchor (OOM) is recorded, the bench goes on
        return {
            "batch": batch,
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        }
    wall = time.perf_counter() - start
    questions = sum(len(s) for s in run.output["samples"].values())
    print(f"anchor HFLM {task} batch={batch}: {questions} q in {wall:.1f}s", flush=True)
    return {
        "batch": batch,
        "picked": list(getattr(lm, "batch_sizes", {}).values()),
        "questions": questions,
        "wall_s": wall,
        "items_per_s": questions / wall,
        "peak_gpu_gib": _cuda_peak(device),
    }


def _load_image(request: dict) -> Any:
    from PIL import Image

    if "image_b64" in request:
        return Image.open(io.BytesIO(base64.b64decode(request["image_b64"]))).convert("RGB")
    return Image.open(request["image"]).convert("RGB")


def anchor_mm(
    model: Any, processor: Any, requests: list[dict], batch: int, budget: int, device: str
) -> dict:
    """lmms-eval's ``llava_hf`` loop: chat template, processor, greedy ``generate``, decode."""
    import torch

    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token

    def answer(chunk: list[dict]) -> list[str]:
        texts = [
            processor.apply_chat_template(
                [
                    {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": r["prompt"]}],
                    },
                ],
                add_generation_prompt=True,
            )
            for r in chunk
        ]
        inputs = processor(
            images=[_load_image(r) for r in chunk], text=texts, return_tensors="pt", padding=True
        )
        inputs = inputs.to(device, model.dtype)
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=budget,
                do_sample=False,
                pad_token_id=processor.tokenizer.pad_token_id,
            )
        return processor.tokenizer.batch_decode(
            out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )

    tokens = 0
    try:
        answer(requests[:batch])  # warm-up: kernels and allocator, as lmms-eval's first batch pays
        _cuda_peak(device, reset=True)
        start = time.perf_counter()
        for i in range(0, len(requests), batch):
            tokens += sum(
                len(processor.tokenizer(a)["input_ids"]) for a in answer(requests[i : i + batch])
            )
    except Exception as exc:  # noqa: BLE001 - a failing anchor (OOM) is recorded, the bench goes on
        return {
            "batch": batch,
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        }
    wall = time.perf_counter() - start
    return {
        "batch": batch,
        "requests": len(requests),
        "wall_s": wall,
        "items_per_s": len(requests) / wall,
        "answer_tokens_mean": tokens / len(requests),
        "peak_gpu_gib": _cuda_peak(device),
    }


def run_anchors(
    args: argparse.Namespace,
    trio: dict,
    tokenizer: Any,
    data: Path,
    workload: dict,
    group: tuple[str, ...],
) -> dict[str, Any]:
    """Every anchor configuration on its subset of every task of ``group``."""
    rng = random.Random(args.seed)
    out: dict[str, Any] = {}
    for task in group:
        if task in TEXT_TASKS:
            out[task] = [
                anchor_text(
                    trio["base"], tokenizer, data, task, args.anchor_text_limit, b, args.device
                )
                for b in args.hflm_batches
            ]
            continue
        runs = []
        for batch in args.mm_batches:
            n = args.anchor_mm_batch1 if batch == 1 else max(args.anchor_mm_requests, 2 * batch)
            picked = rng.sample(workload["requests"][task], min(n, len(workload["requests"][task])))
            runs.append(anchor_mm(trio["llava"], trio["processor"], picked, batch, 16, args.device))
            print(f"anchor generate {task} batch={batch}: {runs[-1]}", flush=True)
        out[task] = runs
    return out


# --------------------------------------------------------------------------- the whole suite


def _anchor_seconds(run: dict, fixed: dict[int, float], size: int) -> float:
    """Full-size seconds of one anchor run. ``auto`` probes once per task, then runs at the batch
    it picked: the probe is what its subset run took beyond the questions at that batch's measured
    rate (or the largest measured batch below it), and is counted once."""
    if run["batch"] != "auto" or not run.get("picked"):
        return size / run["items_per_s"]
    below = [b for b in fixed if b <= run["picked"][0]]
    if not below:
        return size / run["items_per_s"]
    rate = fixed[max(below)]
    return max(0.0, run["wall_s"] - run["questions"] / rate) + size / rate


def extrapolate(
    ours: dict, anchors: dict, full: dict[str, int], rates: dict[str, float] | None = None
) -> dict:
    """Full-size wall times: ours per model and task (its measured rate x the full size; ``rates``
    fills a task a call did not finish), the anchors' per task for the models they would run
    (text: base and LLaVA; images: LLaVA, and IAA at LLaVA's rate, which flatters the anchors)."""
    ours_full = {
        key: task["wall_s"] * full[key.split("/")[1]] / max(task["requests"], 1)
        for key, task in ours.get("tasks", {}).items()
    }
    for key, rate in (rates or {}).items():
        if key.split("/")[1] in full and key not in ours_full:
            ours_full[key] = full[key.split("/")[1]] / rate
    anchor_full: dict[str, dict] = {}
    for task, runs in anchors.items():
        ok = [r for r in runs if "error" not in r]
        fixed = {r["batch"]: r["items_per_s"] for r in ok if r["batch"] != "auto"}
        per_run = {str(r["batch"]): 2 * _anchor_seconds(r, fixed, full[task]) for r in ok}
        best = min((b for b in per_run if b != "auto"), key=per_run.get, default=None)
        default = "auto" if task in TEXT_TASKS else "1"
        anchor_full[task] = {
            "by_batch_s": per_run,
            "best_batch": best,
            "best_s": per_run.get(best),
            "default_batch": default,
            "default_s": per_run.get(default),
        }
    return {"ours_s": ours_full, "anchors": anchor_full}


def whole_suite(reports: list[dict], rates: dict[str, float]) -> dict[str, Any]:
    """One full-size account from the per-group calls: ours (tasks + one load per model + the
    CLI's start-up) beside the anchors' pipelines as users run them by default (HFLM ``auto``,
    lmms-eval batch 1) and tuned (their best fixed batches), with the same model loads."""
    ours: dict[str, float] = {}
    loads: dict[str, float] = {}
    anchors: dict[str, dict] = {}
    startup = []
    for report in reports:
        part = extrapolate(
            report.get("ours", {}), report.get("anchors", {}), report["full_sizes"], rates
        )
        ours.update(part["ours_s"])
        anchors.update(part["anchors"])
        run = report.get("ours", {})
        for model, seconds in run.get("model_load_s", {}).items():
            if seconds is not None:
                loads[model] = max(seconds, loads.get(model, 0.0))
        if run.get("results_wall_s"):
            startup.append(run["wall_s"] - run["results_wall_s"])
    start_s = min(startup, default=0.0)
    ours_total = sum(ours.values()) + sum(loads.values()) + start_s
    anchor_loads = 2 * (
        loads.get("base", 0.0) + loads.get("llava", 0.0)
    )  # two text, two image runs
    default = sum(a["default_s"] or 0.0 for a in anchors.values()) + anchor_loads
    tuned = sum(a["best_s"] or 0.0 for a in anchors.values()) + anchor_loads
    return {
        "ours_task_s": ours,
        "ours_load_s": loads,
        "ours_startup_s_at_most": start_s,
        "ours_total_s": ours_total,
        "ours_total_without_blind_base_s": ours_total
        - sum(v for k, v in ours.items() if k.startswith("base/") and k.split("/")[1] in MM_TASKS),
        "anchors": anchors,
        "anchor_loads_s": anchor_loads,
        "anchors_default_total_s": default,
        "anchors_tuned_total_s": tuned,
        "ratio_vs_default": default / ours_total,
        "ratio_vs_tuned": tuned / ours_total,
        "filled_rates": rates,
    }


def write(report: dict[str, Any], out: Path) -> None:
    """The report so far (a call cut short still leaves what it measured)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", type=Path, default=ROOT.parent / "shared" / "data", help="question files"
    )
    parser.add_argument(
        "--work", type=Path, help="data and run folders (default: a temporary folder)"
    )
    parser.add_argument(
        "--model-dirs", type=Path, nargs="*", default=[], help="where the trio may be saved"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "suite_gpu.json")
    parser.add_argument("--group", choices=["text", "mm", "all"], default="all")
    parser.add_argument(
        "--text-per-subject", type=int, help="first N questions per subject (default: all)"
    )
    parser.add_argument(
        "--mme-images", type=int, help="seeded subset of MME's 1,187 images (default: all)"
    )
    parser.add_argument(
        "--mmbench-questions", type=int, help="seeded subset of the 1,176 questions (default: all)"
    )
    parser.add_argument("--vqav2-questions", type=int, default=5000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--skip-anchors", action="store_true")
    parser.add_argument(
        "--anchor-text-limit", type=int, default=10, help="HFLM: first N questions per subject"
    )
    parser.add_argument("--hflm-batches", nargs="*", default=["16", "32", "auto"])
    parser.add_argument("--mm-batches", nargs="*", type=int, default=[1, 8, 32])
    parser.add_argument(
        "--anchor-mm-batch1", type=int, default=16, help="requests per task at batch 1"
    )
    parser.add_argument(
        "--anchor-mm-requests", type=int, default=64, help="requests per task at larger batches"
    )
    parser.add_argument(
        "--deadline", type=float, default=560.0, help="seconds this invocation may take"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny shapes and data (CPU unless --device cuda)"
    )
    parser.add_argument("--debug", action="store_true", help="our run's tracebacks in full")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="*",
        help="reports of earlier calls: write the whole-suite account to --out and stop",
    )
    parser.add_argument(
        "--rate",
        nargs="*",
        default=[],
        help="MODEL/TASK=REQUESTS_PER_S for a task a call cut short",
    )
    args = parser.parse_args(argv)
    args.hflm_batches = [b if b == "auto" else int(b) for b in args.hflm_batches]
    if args.tiny:
        args.text_per_subject = args.text_per_subject or 2
        args.mme_images, args.mmbench_questions = args.mme_images or 3, args.mmbench_questions or 2
        args.vqav2_questions = min(args.vqav2_questions, 4)
        args.anchor_text_limit, args.anchor_mm_batch1, args.anchor_mm_requests = 1, 2, 4
        args.mm_batches, args.hflm_batches = [1, 2], [2]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Synthesise, build, run ours and the anchors; write and return the JSON report."""
    import torch
    import transformers

    args = parse(argv)
    if args.combine:
        rates = {k: float(v) for k, v in (item.split("=") for item in args.rate)}
        reports = [json.loads(path.read_text(encoding="utf-8")) for path in args.combine]
        account = {"from": [str(p) for p in args.combine], **whole_suite(reports, rates)}
        write(account, args.out)
        return account
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        args.device = "cpu"
    clock = time.perf_counter()
    group = {"text": TEXT_TASKS, "mm": MM_TASKS, "all": TEXT_TASKS + MM_TASKS}[args.group]
    work = args.work or Path(tempfile.mkdtemp(prefix="suite-"))
    data = work / "data"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    workload = synthesise(args, data, group)
    timings["synthesise_s"] = time.perf_counter() - start
    start = time.perf_counter()
    tokenizer = build_tokenizer(corpus(data), 1000 if args.tiny else 32000)
    timings["tokenizer_s"] = time.perf_counter() - start
    start = time.perf_counter()
    trio = build_trio(tokenizer, args.tiny, args.device, args.seed + 1)
    mmlu_gpu.sync(args.device)
    timings["build_s"] = time.perf_counter() - start
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "shapes": "tiny"
        if args.tiny
        else "Llama-3-8B base; llava-hf LLaVA (CLIP ViT-L/14-336 + its own "
        "Llama-3-8B LM); IAA-14 on the base; random bf16",
        "tokenizer": f"byte-level BPE trained on the prompts, {len(tokenizer)} tokens, "
        "Llama-3 chat template",
        "group": list(group),
        "sizes": workload["sizes"],
        "full_sizes": workload["full_sizes"],
        "subsets": {
            k: {"seed": args.seed, "of": workload["full_sizes"][k]}
            for k, v in workload["sizes"].items()
            if v != workload["full_sizes"][k]
        },
    }
    report["timings"] = timings
    write(report, args.out)
    if not args.skip_ours:
        folders, timings["save_s_by_model"] = save_trio(trio, tokenizer, [*args.model_dirs, work])
        write(report, args.out)
    if not args.skip_anchors:
        start = time.perf_counter()
        report["anchors"] = run_anchors(args, trio, tokenizer, data, workload, group)
        timings["anchors_s"] = time.perf_counter() - start
        write(report, args.out)
    del trio
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    if not args.skip_ours:
        remaining = args.deadline - (time.perf_counter() - clock) - 15
        report["ours"] = run_ours(args, work, data, folders, group, remaining)
    report["full_size"] = extrapolate(
        report.get("ours", {}), report.get("anchors", {}), workload["full_sizes"]
    )
    write(report, args.out)
    print(json.dumps(report["full_size"], indent=1), "->", args.out, flush=True)
    return report


if __name__ == "__main__":
    main()
