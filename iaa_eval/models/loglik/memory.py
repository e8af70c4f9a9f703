"""The memory plan of the log-likelihood scorer: how many tokens, rows and read-outs a forward may
take, sized from the model's config and the device's free memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

CPU_BUDGET_BYTES = 1 << 30
GPU_MEMORY_FRACTION = 0.85
MAX_TOKENS = 16384  # past ~8-16k tokens an 8B forward is matmul-bound; bigger ones only cost memory
DENSE_MAX_TOKENS = 2048  # dense masks cost T**2 memory and attention: packs without flex stay short
READOUT_SHARE = 4  # read-out logits may take 1/READOUT_SHARE of the budget


@dataclass
class MemoryPlan:
    """Bytes a forward needs, from the model's shape, against a budget.

    Args:
        act_bytes: transient activation bytes per input token (one layer's MLP and attention inputs,
            K/V repeated to the query heads).
        mask_bytes: bytes per element of a dense ``T x T`` mask (0 with flex attention: none).
        logit_bytes: bytes per read-out position (a float32 vocab row, twice for the log-softmax).
        budget_bytes: what a forward may use.
        max_rows: a fixed ``batch_size`` caps rows per forward as well.
        max_tokens: cap on tokens per forward.
    """

    act_bytes: int
    mask_bytes: int
    logit_bytes: int
    budget_bytes: int
    max_rows: int | None = None
    max_tokens: int = MAX_TOKENS

    @classmethod
    def for_model(cls, model: Any, batch_size: int | str, budget_bytes: int | None = None,
                  max_tokens: int | None = None, *, dense: bool = True) -> MemoryPlan:
        """Size from the config; ``batch_size="auto"`` on CUDA reads free memory once."""
        config = (model.config.get_text_config() if hasattr(model.config, "get_text_config")
                  else model.config)
        hidden = config.hidden_size
        inter = getattr(config, "intermediate_size", 4 * hidden)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        size = next(model.parameters()).element_size()
        if budget_bytes is None:
            device = next(model.parameters()).device
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                budget_bytes = int(free * GPU_MEMORY_FRACTION)
            else:
                budget_bytes = CPU_BUDGET_BYTES
        max_rows = batch_size if isinstance(batch_size, int) else None
        cap = max_tokens or (DENSE_MAX_TOKENS if dense else MAX_TOKENS)
        act = size * (6 * hidden + 3 * inter + 4 * heads * head_dim)
        return cls(act, size if dense else 0, 8 * config.vocab_size, budget_bytes, max_rows, cap)

    def forward_bytes(self, tokens: int, length: int) -> int:
        """Estimate for ``tokens`` input tokens whose sequences are ``length`` long."""
        return self.act_bytes * tokens + self.mask_bytes * length * length

    @property
    def capacity(self) -> int:
        """Tokens per forward: the largest within the token cap whose bytes fit the budget
        (at least 1)."""
        room = self.budget_bytes - self.budget_bytes // READOUT_SHARE
        tokens = self.max_tokens
        while tokens > 1 and self.forward_bytes(tokens, tokens) > room:
            tokens = tokens * 3 // 4
        return tokens

    @property
    def max_reads(self) -> int:
        """Read-out positions per forward within their share of the budget."""
        return max(1, self.budget_bytes // READOUT_SHARE // self.logit_bytes)

    def shrink(self) -> None:
        """After a real out-of-memory error: half the budget (and the caps) from now on."""
        self.budget_bytes //= 2
        self.max_tokens = max(1, self.max_tokens // 2)
        if self.max_rows is not None:
            self.max_rows = max(1, self.max_rows // 2)
