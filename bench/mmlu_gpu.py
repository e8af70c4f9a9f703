"""MMLU 5-shot scoring speed: our FastScorer vs lm-eval's HFLM, same model, questions and process.

GPU (one H100; the issue-7 measurement)::

    python bench/mmlu_gpu.py --data-dir <mmlu dir> --out bench/results/mmlu_gpu.json

builds a Llama-3-8B-shaped model with random bf16 weights directly on the GPU (hidden 4096, 32
layers, 32 heads / 8 KV heads, intermediate 14336, vocab 128256, SDPA attention), turns the first
``--per-subject`` (35) test questions of each MMLU subject into lm-eval's standard 5-shot requests
(our ``iaa_eval/data/tasks/mmlu`` YAMLs through lm-eval's TaskManager), and times
``loglikelihood`` over all of them for: ours (``batch_size="auto"``, prefix reuse on, then off)
and HFLM (``--hflm-batches``: a fixed batch, 16, then ``batch_size="auto"``; ``--hflm-batches 16``
skips ``auto``'s slow probing). It reports questions/s, our host seconds by stage (tokenization,
grouping, pack layouts, time to the first forward), the ratios,
agreement of per-question predictions (disagreements listed with both scorers' top-2 gaps: bf16
ties), MFU against a bf16
matmul peak measured in the same run, and peak GPU memory, as JSON.

Tokenizer: Llama-3's cannot be downloaded here, so a byte-level BPE (32k tokens, BOS added like
Llama-3's) is trained at start-up on the questions' own text. Both scorers see exactly the same
token ids; the JSON records the resulting prompt lengths (real 5-shot MMLU under Llama-3's
tokenizer: mean ~625 tokens).

Without ``--data-dir`` the questions are synthetic, written in MMLU's layout: 57 subjects, each
with a length scale drawn log-normally (sigma 0.5), questions of ~48 x scale words and options of
~9 x scale words, which gives a mean 5-shot prompt of ~600 tokens (reported).

``--tiny``: a 2-layer Llama on CPU and six synthetic questions, in seconds, without HFLM's
``auto`` (its probing at full length is slow on CPU): the smoke test and ``bench/mmlu_cpu.py``.
The GPU machine lacks lm-eval: carry wheels for lm_eval 0.4.13, datasets, dill and multiprocess.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=1024, max_position_embeddings=4096)


def write_synthetic(root: Path, subjects: int, per_subject: int, seed: int, scale: float) -> Path:
    """MMLU-layout CSVs of made-up words (the documented length distribution)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 9))) for _ in range(3000)]

    def words(n: float) -> str:
        return " ".join(rng.choice(vocab) for _ in range(max(1, round(rng.gauss(n, n / 4)))))

    for index in range(subjects):
        size = scale * rng.lognormvariate(0, 0.5)
        for split, n in (("dev", 5), ("test", per_subject)):
            (root / split).mkdir(parents=True, exist_ok=True)
            with (root / split / f"subject_{index:02d}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(
                    [words(48 * size) + "?", *(words(9 * size) for _ in range(4)), rng.choice("ABCD")] for _ in range(n)
                )
    return root


def requests(data_dir: Path, per_subject: int, shots: int) -> list[Any]:
    """lm-eval's own loglikelihood requests for MMLU (letter formulation), via our task YAMLs."""
    from iaa_eval.tasks.text import load_tasks
    from iaa_eval.tasks.text_configs import MMLU

    loaded, _, _ = load_tasks(MMLU, "letter", data_dir, "raise")
    instances = []
    for _, task in sorted(loaded["tasks"].items()):
        task.set_config(key="num_fewshot", value=shots)
        task.set_fewshot_seed(seed=1234)
        task.build_all_requests(limit=per_subject)
        instances += task.instances
    return instances


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Byte-level BPE with a BOS added to every encoding (as Llama-3's tokenizer does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[(specials[0], 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[1], pad_token=specials[1])


def build_model(shape: dict, device: str) -> Any:
    """Random weights, built where they run (no 32 GB fp32 detour on the host)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    config = LlamaConfig(**shape, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def matmul_peak(device: str) -> float:
    """Measured bf16 matmul FLOP/s (8192^3, mean of 20 after 5 warm-ups); CPU: fp32 512^3."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device.startswith("cuda") else (512, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(5):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    sync(device)
    return 20 * 2 * n**3 / (time.perf_counter() - start)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flops(shape: dict, tokens: float, attended: float, head_positions: float) -> float:
    """Linear layers (2 x params x tokens), causal attention (4 x hidden x layers x pairs), head."""
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    linear = layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    return 2 * linear * tokens + 4 * h * layers * attended + 2 * h * shape["vocab_size"] * head_positions


def timed(name: str, lm: Any, instances: list, device: str) -> dict:
    """Wall time of ``lm.loglikelihood`` over every request, and peak GPU memory."""
    import torch

    sync(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    values = lm.loglikelihood(instances)
    sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    print(f"{name}: {wall:.1f}s", flush=True)
    return {"wall_s": wall, "peak_gpu_gib": peak, "values": values}


def predictions(instances: list, values: list) -> dict[tuple, list[float]]:
    """Per question: the four options' log-likelihoods in order."""
    out: dict[tuple, list[float]] = {}
    for inst, (ll, _) in zip(instances, values, strict=True):
        out.setdefault((inst.task_name, inst.doc_id), []).append(ll)
    return out


def agreement(ref: dict, other: dict, tie: float) -> dict:
    """Share of questions with the same argmax; disagreements with both top-2 gaps."""

    def top(lls: list[float]) -> tuple[int, float]:
        order = sorted(range(len(lls)), key=lambda k: -lls[k])
        return order[0], lls[order[0]] - lls[order[1]]

    diffs = []
    for key, lls in ref.items():
        (a, gap_a), (b, gap_b) = top(lls), top(other[key])
        if a != b:
            diffs.append({"question": f"{key[0]}/{key[1]}", "gaps": [round(gap_a, 5), round(gap_b, 5)]})
    delta = [abs(x - y) for k in ref for x, y in zip(ref[k], other[k], strict=True)]
    return {
        "same": 1 - len(diffs) / len(ref), "disagreements": len(diffs),
        "ties_within_noise": sum(max(d["gaps"]) < tie for d in diffs), "listed": diffs[:50],
        "abs_ll_diff_median": statistics.median(delta), "abs_ll_diff_max": max(delta),
    }


def workload(lm: Any, instances: list, shape: dict) -> dict:
    """Prompt lengths (our tokenization = HFLM's) and the FLOPs a no-reuse forward needs."""
    contexts = {inst.args[0] for inst in instances}
    lengths = [len(head) for head, _ in lm.encode_pairs([(c, " A") for c in sorted(contexts)])]
    required = flops(shape, sum(lengths), sum(n * (n + 1) / 2 for n in lengths), len(lengths))
    return {
        "questions": len(lengths), "subjects": len({i.task_name for i in instances}),
        "context_tokens_mean": statistics.fmean(lengths), "context_tokens_median": statistics.median(lengths),
        "context_tokens_p90": sorted(lengths)[int(0.9 * len(lengths))], "context_tokens_total": sum(lengths),
        "required_flops": required,
    }


@contextmanager
def host_clock(lm: Any) -> Iterator[dict[str, float]]:
    """Host seconds of our scorer's call, by stage: ``encode_s`` (HFLM-exact tokenization),
    ``group_s`` (distinct rows, prefix groups), ``layout_s`` (every forward's pack layout: after
    the first, overlapped with the GPU's work) and ``before_first_forward_s`` (from the call's start
    to its first forward's launch: everything the GPU waits for)."""
    from iaa_eval.models.loglik import scorer as scorer_module

    clock = {"encode_s": 0.0, "group_s": 0.0, "layout_s": 0.0, "before_first_forward_s": 0.0}
    scorer, layout, start = lm.scorer, scorer_module.pack_layout, time.perf_counter()

    def timed_call(fn: Any, key: str, minus: str | None = None) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            begin, other = time.perf_counter(), clock[minus] if minus else 0.0
            try:
                return fn(*a, **k)
            finally:
                clock[key] += time.perf_counter() - begin - ((clock[minus] - other) if minus else 0.0)
        return call

    def first(fn: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            clock["before_first_forward_s"] = clock["before_first_forward_s"] or time.perf_counter() - start
            return fn(*a, **k)
        return call

    clock["scoring_s"] = 0.0
    lm.encode_pairs = timed_call(lm.encode_pairs, "encode_s")
    scorer._score_groups = timed_call(scorer._score_groups, "scoring_s")
    scorer.score = timed_call(scorer.score, "group_s", minus="scoring_s")
    scorer._score = first(scorer._score)
    scorer_module.pack_layout = timed_call(layout, "layout_s")
    try:
        yield clock
    finally:
        for name in ("encode_pairs",):
            del lm.__dict__[name]
        for name in ("_score_groups", "score", "_score"):
            del scorer.__dict__[name]
        scorer_module.pack_layout = layout
        clock.pop("scoring_s")
        clock["host_s"] = clock["encode_s"] + clock["group_s"] + clock["layout_s"]


def run_ours(view: Any, instances: list, device: str, reuse: bool, max_tokens: int | None = None) -> dict:
    from torch._dynamo.utils import counters as dynamo_counters

    from iaa_eval.tasks.lm_bridge import TextViewLM

    lm = TextViewLM(view, None, batch_size="auto", prefix_reuse=reuse, max_tokens=max_tokens, progress=False)
    lm.loglikelihood(instances[:8])
    lm.scorer.tokens = lm.scorer.attended = lm.scorer.forwards = lm.scorer.padded_tokens = 0
    lm.scorer.shapes = []
    with host_clock(lm) as host:
        result = timed(f"ours (prefix reuse {'on' if reuse else 'off'})", lm, instances, device)
    print("  host: " + ", ".join(f"{k} {v:.2f}" for k, v in host.items()), flush=True)
    result["host"] = host
    scorer = lm.scorer
    result.update(forwards=scorer.forwards, tokens_run=scorer.tokens, padded_tokens=scorer.padded_tokens,
                  attended=scorer.attended, budget_gib=scorer.plan.budget_bytes / 2**30,
                  max_tokens=scorer.plan.max_tokens, flex_attention=scorer.flex,
                  compiled_graphs=int(dynamo_counters["stats"]["unique_graphs"]),
                  forward_shapes=[list(s) for s in scorer.shapes])
    return result


def run_hflm(model: Any, tokenizer: Any, instances: list, device: str, batch: int | str) -> dict:
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch, device=device)
    lm.loglikelihood(instances[:8], disable_tqdm=True)
    result = timed(f"HFLM batch_size={batch}", lm, instances, device)
    result["batch_sizes"] = list(getattr(lm, "batch_sizes", {}).values())
    return result


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="MMLU in the original layout (default: synthetic)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mmlu_gpu.json")
    parser.add_argument("--per-subject", type=int, default=35, help="test questions per subject (57 x 35 = 1,995)")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hflm-batches", nargs="+", default=["16", "auto"],
                        help="HFLM runs: fixed batches (the first is the agreement reference; 32 runs "
                             "out of memory on an H100) and/or 'auto' (its probing is slow; --tiny: 4)")
    parser.add_argument("--skip-no-reuse", action="store_true")
    parser.add_argument("--max-tokens", type=int, help="our scorer's cap on padded tokens per forward (default: its own)")
    parser.add_argument("--no-math-attention", action="store_true",
                        help="our scorer may not fall back to SDPA's math kernel (an error shows where it would)")
    parser.add_argument("--tie", type=float, default=0.05, help="top-2 gap below which a disagreement is a bf16 tie")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="2-layer Llama on CPU, a few synthetic questions")
    args = parser.parse_args(argv)
    args.hflm_batches = [4] if args.tiny else [b if b == "auto" else int(b) for b in args.hflm_batches]
    if not any(isinstance(b, int) for b in args.hflm_batches):
        parser.error("--hflm-batches: at least one fixed batch (the agreement reference)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; write and return the JSON report."""
    import lm_eval
    import torch
    import transformers

    from iaa_eval.models.base import TextView
    from iaa_eval.tasks.lm_bridge import TextViewLM

    args = parse(argv)
    if args.no_math_attention:
        from torch.nn.attention import SDPBackend

        from iaa_eval.models.loglik import scorer

        scorer._ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    device, shape = ("cpu", TINY) if args.tiny else (args.device, LLAMA3_8B)
    per_subject = 2 if args.tiny else args.per_subject
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data_dir or write_synthetic(Path(tmp), 3 if args.tiny else 57, per_subject, args.seed,
                                                0.3 if args.tiny else 1.0)
        instances = requests(data, per_subject, args.shots)
    tokenizer = train_tokenizer(sorted({i.args[0] for i in instances}), 1000 if args.tiny else 32000)
    model = build_model(shape, device)
    view = TextView(model, tokenizer, "bench")
    peak = matmul_peak(device)
    shape_info = workload(TextViewLM(view, None, progress=False), instances, shape)
    runs = {"ours": run_ours(view, instances, device, reuse=True, max_tokens=args.max_tokens)}
    if not args.skip_no_reuse:
        runs["ours_no_reuse"] = run_ours(view, instances, device, reuse=False, max_tokens=args.max_tokens)
    fixed = [b for b in args.hflm_batches if b != "auto"]
    for batch in args.hflm_batches:
        name = "hflm_auto" if batch == "auto" else "hflm_fixed" if batch == fixed[0] else f"hflm_batch{batch}"
        runs[name] = run_hflm(model, tokenizer, instances, device, batch)
    reference = predictions(instances, runs["hflm_fixed"].pop("values"))
    n = shape_info["questions"]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": torch.cuda.get_device_name() if device != "cpu" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?"},
        "model": {**shape, "dtype": str(next(model.parameters()).dtype), "weights": "random"},
        "tokenizer": f"byte-level BPE trained on the prompts, {len(tokenizer)} tokens, BOS added",
        "workload": {**shape_info, "data": str(args.data_dir) if args.data_dir else "synthetic", "shots": args.shots},
        "peak_matmul_tflops": peak / 1e12,
        "floor_qps_no_reuse": n / (shape_info["required_flops"] / peak),
    }
    for run in runs.values():
        values = run.pop("values", None)
        run["questions_per_s"] = n / run["wall_s"]
        run["mfu"] = shape_info["required_flops"] / run["wall_s"] / peak
        if "tokens_run" in run:
            executed = flops(shape, run["tokens_run"], run["attended"], n)
            run["mfu_executed"] = executed / run["wall_s"] / peak
            run["floor_qps"] = n / (executed / peak)
        if values is not None:
            run["agreement_with_hflm_fixed"] = agreement(reference, predictions(instances, values), args.tie)
    report["runs"] = runs
    ours = runs["ours"]["questions_per_s"]
    report["ratios"] = {f"ours_vs_{k}": ours / r["questions_per_s"] for k, r in runs.items() if k.startswith("hflm")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, run in runs.items():
        print(f"{name:14s} {run['questions_per_s']:8.1f} q/s  MFU {run['mfu']:.2f}  peak {run['peak_gpu_gib'] or 0:.1f} GiB")
    print(json.dumps(report["ratios"]), "->", args.out)
    return report


if __name__ == "__main__":
    main()
