"""Pretraining of the mini-world's base pieces: tokenizer, tiny Llama LM, tiny CLIP vision tower
(with its image processor), and saving them in float16.

Everything is seeded and device-agnostic; on CPU the thread count follows the cores actually
free (oversubscribed threads made steps 13-23x slower in the feasibility run, DESIGN.md §7).
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<image>")
IMAGE_SIZE, PATCH = 64, 16  # easy-vqa images, the tower's patches


def seed_everything(seed: int) -> torch.Generator:
    """Seed python and torch; return a torch generator for data order."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_tokenizer(texts: Sequence[str], vocab_size: int = 1536) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with BOS/EOS/PAD and the ``<image>`` token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    # Llama convention: encoding with special tokens prepends <s>
    # (pretraining rows start with it too).
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=["<image>"], model_max_length=512,
    )


def llama_config(vocab_size: int, hidden: int = 128, layers: int = 4, heads: int = 4) -> Any:
    """The tiny base: hidden 128 x 4 layers (about 1 M parameters with a 1.5 k vocabulary)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 3,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=512, bos_token_id=0, eos_token_id=1, pad_token_id=2,
        tie_word_embeddings=False,
    )


def pack(tokenizer: Any, docs: Sequence[str], seq_len: int) -> torch.Tensor:
    """Documents as ``<s> doc </s>`` concatenated and cut into rows of ``seq_len`` tokens."""
    ids: list[int] = []
    for doc in docs:
        ids += [tokenizer.bos_token_id, *tokenizer(doc, add_special_tokens=False)["input_ids"],
                tokenizer.eos_token_id]
    rows = len(ids) // seq_len
    return torch.tensor(ids[: rows * seq_len]).view(rows, seq_len)  # (rows, seq_len)


def loss_curve(losses: list[float], points: int = 10) -> list[float]:
    """A loss curve cut to ``points`` means of equal spans (for manifests and logs)."""
    n = max(1, len(losses) // points)
    return [round(sum(losses[i : i + n]) / len(losses[i : i + n]), 4)
            for i in range(0, len(losses), n)][:points]


def cosine_lr(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class Schedule:
    """Steps, batch size, peak learning rate (AdamW, cosine, 5% warm-up)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0


def _batches(n: int, schedule: Schedule, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Random indices, epoch after epoch, ``schedule.steps`` batches in all."""
    order = torch.randperm(n, generator=gen)
    at = 0
    for _ in range(schedule.steps):
        if at + schedule.batch_size > n:
            order, at = torch.randperm(n, generator=gen), 0
        yield order[at : at + schedule.batch_size]
        at += schedule.batch_size


def run_steps(
    params: Sequence[torch.nn.Parameter], loss_fn: Any, n: int, schedule: Schedule, seed: int,
    desc: str
) -> list[float]:
    """The shared loop: AdamW over ``params``, ``loss_fn(indices)`` per step; returns the losses."""
    gen = seed_everything(seed)
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay,
                            betas=(0.9, 0.98))
    warmup = max(1, schedule.steps // 20)
    losses = []
    bar = tqdm(_batches(n, schedule, gen), total=schedule.steps, desc=desc, leave=False)
    for step, idx in enumerate(bar):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, schedule.steps, schedule.lr, warmup)
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    log.info("%s: loss %.3f -> %.3f over %d steps", desc, losses[0],
             sum(losses[-10:]) / min(10, len(losses)), schedule.steps)
    return losses


def pretrain_lm(model: Any, rows: torch.Tensor, schedule: Schedule, seed: int) -> list[float]:
    """Next-token pretraining of the base on packed corpus rows."""
    device = model.device
    model.train()

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        batch = rows[idx].to(device)
        return model(input_ids=batch, labels=batch).loss

    losses = run_steps(list(model.parameters()), loss_fn, len(rows), schedule, seed, "base LM")
    model.eval()
    return losses


def clip_config(image_size: int = 64, patch: int = 16, hidden: int = 64, layers: int = 3) -> Any:
    """The tiny vision tower: 64 px easy-vqa images, 16 px patches (16 patches + CLS)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
        num_attention_heads=4, image_size=image_size, patch_size=patch, projection_dim=hidden,
    )


def pretrain_vision(
    tower: Any, pixels: torch.Tensor, labels: torch.Tensor, n_classes: Sequence[int],
    schedule: Schedule, seed: int
) -> tuple[list[float], float]:
    """Shape and colour classification of easy-vqa training images (an honest, supervised
    objective). Heads read both the pooled output and the mean of the patch features of the
    layer the VLMs use (``hidden_states[-2]``), so that layer carries the labels. The heads are
    thrown away; returns the losses and the final training accuracy on the last batch."""
    device = tower.device
    width = tower.config.hidden_size
    heads = torch.nn.ModuleList(torch.nn.Linear(2 * width, k) for k in n_classes).to(device)
    tower.train()
    last_acc = [0.0]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        out = tower(pixel_values=pixels[idx].to(device), output_hidden_states=True)
        # pooled and mean patch features: (B, 2*width)
        feats = torch.cat([out.pooler_output, out.hidden_states[-2][:, 1:].mean(1)], dim=-1)
        target = labels[idx].to(device)  # (B, n_heads)
        logits = [head(feats) for head in heads]
        loss = sum(torch.nn.functional.cross_entropy(lg, target[:, k])
                   for k, lg in enumerate(logits))
        right = torch.stack([lg.argmax(-1) == target[:, k] for k, lg in enumerate(logits)]).all(0)
        last_acc[0] = right.float().mean().item()
        return loss

    params = list(tower.parameters()) + list(heads.parameters())
    losses = run_steps(params, loss_fn, len(pixels), schedule, seed, "vision tower")
    tower.eval()
    return losses, last_acc[0]


def image_processor() -> Any:
    """CLIP preprocessing at the easy-vqa size (64 px; images are square, so padding is a no-op)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def save_fp16(model: Any, path: Path) -> None:
    """``save_pretrained`` in float16 safetensors, leaving the in-memory model untouched."""
    copy.deepcopy(model).to("cpu", torch.float16).save_pretrained(path)
