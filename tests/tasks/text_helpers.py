"""Small MMLU / C-Eval files in the original layouts, and tiny in-memory Llamas, for the text-task tests."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

WORDS = "capital answer right red blue green circle square yes no maybe shape colour city river".split()


def _question(rng: random.Random, subject: str, i: int) -> list[str]:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 9)))
    options = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 4))) for _ in range(4)]
    return [f"{subject.replace('_', ' ')} {i}: {words}?", *options, rng.choice("ABCD")]


def write_mmlu(root: Path, subjects: dict[str, int], seed: int = 0, dev: int = 5) -> Path:
    """``root/{dev,val,test}/<subject>_<split>.csv`` without header; ``subjects`` maps name -> test rows."""
    rng = random.Random(seed)
    for subject, n_test in subjects.items():
        for split, n in (("dev", dev), ("val", 2), ("test", n_test)):
            (root / split).mkdir(parents=True, exist_ok=True)
            with (root / split / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(_question(rng, subject, i) for i in range(n))
    return root


def write_ceval(root: Path, subjects: dict[str, int], seed: int = 0) -> Path:
    """``root/{dev,val,test}/<subject>_<split>.csv`` with C-Eval's header (dev with explanations)."""
    rng = random.Random(seed)
    for subject, n_val in subjects.items():
        for split, n in (("dev", 5), ("val", n_val), ("test", 1)):
            (root / split).mkdir(parents=True, exist_ok=True)
            header = ["id", "question", "A", "B", "C", "D", "answer"] + (["explanation"] if split == "dev" else [])
            with (root / split / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                for i in range(n):
                    row = _question(rng, "以下是中国关于", i)
                    writer.writerow([i, *row] + (["因为如此。"] if split == "dev" else []))
    return root


def copy_subjects(source: Path, target: Path, subjects: list[str], splits: tuple[str, ...]) -> Path:
    """Copy a few subjects' files of a real data set into a temporary folder (never into the repo)."""
    for split in splits:
        (target / split).mkdir(parents=True, exist_ok=True)
        for subject in subjects:
            shutil.copy(source / split / f"{subject}_{split}.csv", target / split)
    return target


def tiny_model(seed: int, max_positions: int = 4096, add_bos: bool = False):  # noqa: ANN201
    """(model, tokenizer): a random tiny Llama (fp32, eval) built in memory; ``add_bos``: the
    tokenizer prepends ``<s>`` like Llama's."""
    import torch
    from tokenizers import processors
    from transformers import LlamaForCausalLM

    from tests.conftest import build_tokenizer, tiny_llama_config

    tokenizer = build_tokenizer()
    if add_bos:
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
        )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), max_position_embeddings=max_positions)).eval()
    return model, tokenizer


def hflm(model, tokenizer, batch_size: int = 8):  # noqa: ANN001, ANN201
    """lm-eval's own HFLM on the same in-memory model."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
