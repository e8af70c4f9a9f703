"""Generation batches: how many requests run at once, and the host's share of each batch
prepared a batch ahead in a background thread while the device answers the current one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

log = logging.getLogger(__name__)


class TooWide(Exception):
    """A batch's rows are longer than ``auto`` budgeted for: split it before any work is done."""


class GenerationBatcher:
    """Batches for generation: a fixed ``--batch-size N``, or ``auto`` sized from free device
    memory (no out-of-memory probing) for ``tokens_per_row`` tokens a row, and sized again, before
    any work, when a batch turns out wider (:meth:`fit`: LLaVA-NeXT's anyres prompts reach ~2,900
    tokens). A real out-of-memory error halves the size and retries the same requests, so answers
    are unchanged, only computed in smaller batches.

    Args:
        batch_size: a positive int or ``"auto"``.
        model: the generating module (its config and device size ``auto``).
        tokens_per_row: the sequence length ``auto`` budgets for (prompt + answer + image tokens).
        kv_layers: layers that keep K/V per token (default: the text config's; IAA's MM workflow
            adds its insertion layers).
    """

    CPU_DEFAULT = 8

    def __init__(self, batch_size: int | str, model: torch.nn.Module,
                 tokens_per_row: int = 2048, kv_layers: int | None = None) -> None:
        self.auto = not isinstance(batch_size, int)
        self.overlap = True  # off: each batch prepared in the caller's thread, just before it runs
        self.host_seconds = 0.0  # time the caller waited for batches' host work (see map)
        self.prepare_seconds = 0.0  # time the host work took, wherever it ran
        self.model, self.tokens_per_row = model, tokens_per_row
        config = getattr(model, "config", None)
        self.text_config = getattr(config, "text_config", None) or config
        self.kv_layers = kv_layers or getattr(self.text_config, "num_hidden_layers", 32)
        self.size = self._auto(tokens_per_row) if self.auto else int(batch_size)

    def fit(self, rows: int, width: int) -> None:
        """Before computing a batch of ``rows`` rows ``width`` tokens wide (prompt and answer):
        under ``auto``, a width beyond the budget sizes batches again for it, and raises
        :class:`TooWide` if this batch no longer fits (:meth:`map` splits it and goes on)."""
        if not self.auto or width <= self.tokens_per_row:
            return
        self.tokens_per_row = width
        self.size = min(self.size, self._auto(width))
        if rows > self.size:
            log.info("prompts of %d tokens: generation batches now %d rows", width, self.size)
            raise TooWide

    def _auto(self, tokens_per_row: int) -> int:
        """Rows whose K/V (x2 for activations and the allocator's slack) fit in 80% of the free
        device memory, at most 256; :attr:`CPU_DEFAULT` off CUDA."""
        device = next(self.model.parameters()).device
        if device.type != "cuda":
            return self.CPU_DEFAULT
        text = self.text_config
        heads = getattr(text, "num_attention_heads", 32)
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or getattr(text, "hidden_size", 4096) // heads
        element = next(self.model.parameters()).element_size()
        per_row = 2 * self.kv_layers * kv_heads * head_dim * element * tokens_per_row * 2
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, min(256, int(free * 0.8) // per_row))

    def _timed(self, prepare: Callable[[Sequence[Any]], Any], batch: Sequence[Any]) -> Any:
        """``prepare(batch)``, its time added to :attr:`prepare_seconds`."""
        start = time.perf_counter()
        try:
            return prepare(batch)
        finally:
            self.prepare_seconds += time.perf_counter() - start

    def map(self, items: Sequence[Any], compute: Callable[[Any], list[Any]],
            prepare: Callable[[Sequence[Any]], Any] | None = None) -> list[Any]:
        """``compute(prepare(batch))`` over consecutive batches of ``items``; results in order.

        ``prepare`` is the host's part of a batch (tokenizing, image preprocessing): with
        :attr:`overlap` it runs in a background thread one batch ahead, so the host works while
        the device computes; it must not touch state ``compute`` changes (each adapter gives it
        its own processor copy). Without, it runs inline, just before its batch.
        :attr:`host_seconds` adds up the time the caller waited for the host's part,
        :attr:`prepare_seconds` the time that part took: their difference was hidden.
        """
        prepare = prepare or list
        out: list[Any] = []
        start = 0
        with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
            ahead: tuple[int, int, Future] | None = None
            while start < len(items):
                size = min(self.size, len(items) - start)
                end = start + size
                waiting = time.perf_counter()
                if not self.overlap:
                    prepared = self._timed(prepare, items[start:end])
                else:
                    pending = ahead[2] if ahead is not None and ahead[:2] == (start, size) else (
                        pool.submit(self._timed, prepare, items[start:end]))
                    ahead = None
                    if end < len(items):
                        following = min(self.size, len(items) - end)
                        ahead = (end, following, pool.submit(self._timed, prepare,
                                                             items[end : end + following]))
                    prepared = pending.result()
                self.host_seconds += time.perf_counter() - waiting
                try:
                    out += compute(prepared)
                except TooWide:
                    continue
                except torch.OutOfMemoryError:
                    if size == 1:
                        raise
                    self.size = max(1, size // 2)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    log.warning("out of memory generating %d answers at once; batch size now %d",
                                size, self.size)
                    continue
                start = end
        return out
