"""The seeded training loop shared by the IAA and LLaVA-style stages.

Both model families train with the same :class:`TrainConfig` (steps, learning rate, batch size,
seed), so their budgets are comparable by construction: the same batch order
(:func:`batch_indices`), the same schedule (:func:`warmup_cosine`), the same optimiser steps
(:func:`run_training`). The loss covers the answer tokens only (:func:`causal_lm_loss`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from iaa_eval.errors import UsageError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule of one stage (AdamW, linear warm-up then cosine decay to zero).

    Args:
        steps: optimizer steps.
        lr: peak learning rate.
        batch_size: examples per step.
        seed: seeds batch order, replay mixing and torch.
        warmup_ratio: fraction of ``steps`` spent warming up.
        weight_decay: AdamW weight decay (LLaVA-1.5 uses 0).
        max_grad_norm: gradient clipping (``None``: off).
        micro_batch_size: examples per forward/backward (``None``: the whole batch). Smaller ones
            accumulate gradients: a step still learns from ``batch_size`` examples, weighted by
            answer tokens exactly as one batch would be, in the memory of ``micro_batch_size``.
        progress: show a tqdm bar.
    """

    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    micro_batch_size: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError(f"TrainConfig: steps={self.steps}, batch_size={self.batch_size} and "
                             f"lr={self.lr} "
                             "must be positive")
        if self.micro_batch_size is not None and not 1 <= self.micro_batch_size <= self.batch_size:
            raise UsageError(f"micro_batch_size={self.micro_batch_size}: "
                             f"expected 1 to batch_size={self.batch_size}")

    def parts(self) -> list[slice]:
        """Slices of a step's batch, one per forward/backward."""
        size = self.micro_batch_size or self.batch_size
        return [slice(start, start + size) for start in range(0, self.batch_size, size)]


def warmup_cosine(steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``ceil(steps * warmup_ratio)`` steps, then cosine to 0."""
    warmup = math.ceil(steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def batch_indices(n_items: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches drawn from reshuffled epochs (every item seen once per epoch)."""
    if n_items == 0:
        raise UsageError("training needs at least one example")
    rng, order, batches = random.Random(seed), [], []
    for _ in range(steps):
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(n_items))
                rng.shuffle(order)
            batch.append(order.pop())
        batches.append(batch)
    return batches


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100 (labels unshifted)."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    return nn.functional.cross_entropy(shift_logits, targets, ignore_index=IGNORE_INDEX)


def target_tokens(labels: torch.Tensor) -> int:
    """How many tokens a batch's loss averages over (labels unshifted, as
    :func:`causal_lm_loss`)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def run_training(
    parameters: Sequence[nn.Parameter],
    batch_loss: Callable[[int, slice], tuple[torch.Tensor, int]],
    config: TrainConfig,
    desc: str,
) -> list[float]:
    """Optimise ``parameters`` for ``config.steps`` steps.

    ``batch_loss(step, part)`` returns the mean loss of that part of the step's batch and the number
    of tokens it averages over; parts come from :meth:`TrainConfig.parts`. Returns the loss of
    every step (the history the caller plots or checks).
    """
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise UsageError(f"{desc}: nothing to train (no parameter requires grad)")
    torch.manual_seed(config.seed)
    masters = MasterWeights(parameters)
    optimizer = torch.optim.AdamW(masters.parameters, lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = warmup_cosine(config.steps, config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history: list[float] = []
    bar = tqdm(range(config.steps), desc=desc, disable=not config.progress)
    parts = config.parts()
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        if len(parts) == 1:  # the batch's mean loss: the shipped mini-world's exact arithmetic
            loss, _ = batch_loss(step, parts[0])
            if loss.requires_grad:  # not so with no trained weight on its path (text rows, stage 1)
                loss.backward()
            history.append(loss.item())
        else:
            micro = [partial(batch_loss, step, part) for part in parts]
            history.append(accumulate(parameters, micro))
        masters.take_gradients()
        if config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(masters.parameters, config.max_grad_norm)
        optimizer.step()
        masters.write_back()
        scheduler.step()
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


class MasterWeights:
    """Float32 copies of trained weights held in lower precision: the optimizer steps the copies and
    the model gets them rounded back. Without them an update below a bfloat16 weight's resolution
    (1/128 of its size) is lost: fine-tuning at 2e-5 would barely move the weights. Float32
    weights are their own masters (nothing is copied)."""

    def __init__(self, model_parameters: Sequence[nn.Parameter]) -> None:
        self.pairs = [(p, p if p.dtype == torch.float32 else nn.Parameter(p.detach().float()))
                      for p in model_parameters]
        self.parameters = [master for _, master in self.pairs]

    def take_gradients(self) -> None:
        """Move the model's gradients onto the masters (in float32)."""
        for weight, master in self.pairs:
            if master is not weight:
                master.grad = None if weight.grad is None else weight.grad.float()
                weight.grad = None

    @torch.no_grad()
    def write_back(self) -> None:
        """Round the stepped masters into the model's weights."""
        for weight, master in self.pairs:
            if master is not weight:
                weight.copy_(master)


def accumulate(parameters: Sequence[nn.Parameter],
               parts: Sequence[Callable[[], tuple[torch.Tensor, int]]]) -> float:
    """Backward each part's token-summed loss, then divide the gradients by all parts' tokens: the
    gradient of the whole batch's mean loss. Returns that mean."""
    total_loss, total_tokens = 0.0, 0
    for part in parts:
        loss, tokens = part()
        if tokens == 0:  # nothing to learn here (its mean loss is NaN)
            continue
        if loss.requires_grad:
            (loss * tokens).backward()
        total_loss, total_tokens = total_loss + loss.item() * tokens, total_tokens + tokens
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.div_(max(total_tokens, 1))
    return total_loss / max(total_tokens, 1)
