"""The shared training loop: float32 master weights for weights trained in lower precision."""

from __future__ import annotations

import torch
from torch import nn

from iaa_eval.train.loop import TrainConfig, run_training


def train_weight(dtype: torch.dtype, lr: float) -> torch.Tensor:
    """A 1x8 weight at 1.0 pushed by a constant gradient for 200 steps; returns it in float32."""
    weight = nn.Parameter(torch.ones(1, 8, dtype=dtype))
    x = torch.linspace(0.5, 1.5, 8, dtype=dtype)

    def batch_loss(step: int, part: slice) -> tuple[torch.Tensor, int]:
        return (weight * x).sum().float(), 1

    run_training([weight], batch_loss, TrainConfig(steps=200, lr=lr, batch_size=1, progress=False), "test")
    return weight.detach().float()


def test_bfloat16_weights_follow_float32_training_through_master_weights() -> None:
    """Each AdamW step (at most lr = 1e-4) is below half a bfloat16 step at 1.0 (2^-8): applied to
    the bfloat16 weight directly it would round away every time; the float32 masters keep it."""
    lr = 1e-4
    reference = train_weight(torch.float32, lr)
    trained = train_weight(torch.bfloat16, lr)
    assert (reference < 1 - 2 ** -7).all()  # far enough to show in bfloat16
    torch.testing.assert_close(trained, reference.bfloat16().float(), rtol=0, atol=2 ** -7)
    assert (trained < 1).all()
    plain = nn.Parameter(torch.ones(8, dtype=torch.bfloat16))  # what the loop avoids
    optimizer = torch.optim.AdamW([plain], lr=lr)
    for _ in range(20):
        plain.grad = torch.ones_like(plain)
        optimizer.step()
    assert (plain == 1).all()
