"""Fixtures of the model tests: fresh seeds (logged) and a recorder of generated token ids."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import torch


@pytest.fixture
def fresh_seed() -> int:
    """A new seed per run, logged so that a failure can be reproduced."""
    value = random.randrange(1 << 30)
    logging.getLogger(__name__).warning("seed=%d", value)
    return value


def record_new_tokens(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module
                      ) -> list[torch.Tensor]:
    """Wrap ``model.generate``: the list fills with each call's new token ids ``(rows, new)``."""
    calls: list[torch.Tensor] = []
    real = model.generate

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real(*args, **kwargs)
        calls.append(out[:, kwargs["input_ids"].shape[1]:])
        return out

    monkeypatch.setattr(model, "generate", recording)
    return calls


def record_prefills(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[dict[Any, int]]:
    """Wrap ``module.prefill_shared``: the list fills with each call's head length per key."""
    lengths: list[dict[Any, int]] = []
    real = module.prefill_shared

    def recording(model: Any, rows: Any, keys: Any, shared: dict[Any, int], *rest: Any) -> Any:
        lengths.append(shared)
        return real(model, rows, keys, shared, *rest)

    monkeypatch.setattr(module, "prefill_shared", recording)
    return lengths
