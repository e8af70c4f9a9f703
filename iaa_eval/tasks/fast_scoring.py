"""Fast log-likelihood scoring of (context, continuation) token pairs on a causal LM.

The numbers are lm-eval ``HFLM``'s: each pair is the input ``(context + continuation)[-(L+1):][:-1]``
(left truncation to the model's length ``L``) read out at its last ``len(continuation)`` positions;
log-probabilities are a log-softmax over the whole vocabulary, ``is_greedy`` is the argmax test.
What differs is how little work gets there:

- **one row per distinct input**: the four one-token answers of a question share one input, so
  they cost one forward pass (HFLM's ``group_by="contexts"`` does the same);
- **shared-prefix reuse**: rows are sorted and grouped by their common token prefix (the few-shot
  block of an MMLU subject); the prefix is run once, and its KV cache, repeated along the batch,
  serves every row's suffix;
- **only needed logits**: the decoder's hidden states are gathered at the read-out positions and
  only those go through the LM head, so a batch never holds ``(batch, seq, vocab)`` logits;
- **batches packed by memory**, not by count: a byte estimate per token (activations, KV cache,
  attention mask) against a budget sized once from free GPU memory; a real out-of-memory error
  halves the budget and splits the batch (no probing).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

CPU_BUDGET_BYTES = 1 << 30
GPU_MEMORY_FRACTION = 0.85


@dataclass
class _Row:
    """One distinct model input and the requests read out at its tail."""

    tokens: tuple[int, ...]
    readouts: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)  # (request index, targets)

    @property
    def max_k(self) -> int:
        return max(len(t) for _, t in self.readouts)


@dataclass
class _Group:
    """Rows sharing their first ``prefix_len`` tokens (0: no shared prefix)."""

    prefix_len: int
    rows: list[_Row]


@dataclass
class MemoryPlan:
    """Bytes a batch needs, from the model's shape, against a budget.

    Args:
        act_bytes: transient activation bytes per input token (one layer's MLP and attention inputs).
        kv_bytes: KV-cache bytes per cached token (all layers, keys and values).
        logit_bytes: bytes per read-out position (a float32 vocabulary row, twice for the log-softmax).
        budget_bytes: what a batch may use.
        max_rows: a fixed ``batch_size`` caps rows per batch as well.
    """

    act_bytes: int
    kv_bytes: int
    logit_bytes: int
    budget_bytes: int
    max_rows: int | None = None

    @classmethod
    def for_model(cls, model: Any, batch_size: int | str, budget_bytes: int | None = None) -> MemoryPlan:
        """Size from the config; ``batch_size="auto"`` on CUDA reads free memory once."""
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        hidden = config.hidden_size
        inter = getattr(config, "intermediate_size", 4 * hidden)
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        size = next(model.parameters()).element_size()
        act = size * (6 * hidden + 3 * inter)
        kv = 2 * config.num_hidden_layers * kv_heads * head_dim * size
        logit = 8 * config.vocab_size
        if budget_bytes is None:
            device = next(model.parameters()).device
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                budget_bytes = int(free * GPU_MEMORY_FRACTION)
            else:
                budget_bytes = CPU_BUDGET_BYTES
        max_rows = batch_size if isinstance(batch_size, int) else None
        return cls(act, kv, logit, budget_bytes, max_rows)

    def batch_bytes(self, rows: int, seq: int, prefix: int, readouts: int) -> int:
        """Estimate for ``rows`` inputs of ``seq`` new tokens after ``prefix`` cached ones."""
        kv = self.kv_bytes * rows * (prefix + seq) * (2 if prefix else 1)  # repeated prefix + concatenation
        mask = rows * seq * (prefix + seq) if prefix else 0
        return self.act_bytes * rows * seq + kv + mask + self.logit_bytes * readouts

    def shrink(self) -> None:
        """After a real out-of-memory error: half the budget from now on."""
        self.budget_bytes //= 2
        if self.max_rows is not None:
            self.max_rows = max(1, self.max_rows // 2)


def _lcp(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_groups(rows: Sequence[_Row], *, reuse: bool, min_prefix: int) -> list[_Group]:
    """Group rows by shared prefix; rows without a useful one end up in one ``prefix_len=0`` group.

    Rows are sorted by tokens, so a subject's questions sit side by side, and each neighbour pair is
    linked by the tokens they share (never a row's read-out positions, so every read-out lies in the
    suffix). A run of rows is split at its weakest link when the two parts save more tokens apart
    than together (``(n - 1) * prefix`` tokens saved by a group of ``n``): one odd question cannot
    shrink a subject's long few-shot prefix.
    """
    if not reuse or len(rows) < 2:
        return [_Group(0, list(rows))] if rows else []
    order = sorted(rows, key=lambda r: r.tokens)
    room = [len(r.tokens) - r.max_k for r in order]
    links = [_lcp(order[i].tokens, order[i + 1].tokens, min(room[i], room[i + 1])) for i in range(len(order) - 1)]
    groups: list[_Group] = []
    plain: list[_Row] = []
    todo = [(0, len(order) - 1)]  # inclusive row ranges; links lo .. hi-1
    while todo:
        lo, hi = todo.pop()
        if lo == hi:
            plain.append(order[lo])
            continue
        weakest = min(range(lo, hi), key=links.__getitem__)
        prefix = links[weakest]
        apart = (weakest - lo) * min(links[lo:weakest], default=0) + (hi - weakest - 1) * min(
            links[weakest + 1 : hi], default=0
        )
        if prefix < min_prefix or apart > (hi - lo) * prefix:
            todo += [(lo, weakest), (weakest + 1, hi)]
        else:
            groups.append(_Group(prefix, order[lo : hi + 1]))
    if plain:
        groups.append(_Group(0, plain))
    return groups


class FastScorer:
    """Scores token pairs like HFLM's ``_loglikelihood_tokens``, with the savings listed above.

    Args:
        model: a causal LM (``forward(input_ids, cache=...)`` returning ``.logits``).
        max_length: the model's context length ``L`` used for left truncation.
        batch_size: ``"auto"`` (memory budget only) or a cap on rows per batch.
        prefix_reuse: run shared prefixes once (off: every row in full).
        min_prefix: shortest shared prefix worth a separate pass.
        budget_bytes: override the memory budget (tests; CPU default 1 GiB).
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        model: Any,
        max_length: int,
        *,
        batch_size: int | str = "auto",
        prefix_reuse: bool = True,
        min_prefix: int = 16,
        budget_bytes: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.prefix_reuse = prefix_reuse
        self.min_prefix = min_prefix
        self.progress = progress
        self.plan = MemoryPlan.for_model(model, batch_size, budget_bytes)
        self.device = next(model.parameters()).device
        self.forwards = 0
        self.tokens = 0  # real (unpadded) tokens run through the model
        self.attended = 0  # (query, key) pairs of those tokens' causal attention, for FLOP counts
        self._decoder, self._head = self._split_head()
        forward = (self._decoder or model).forward
        self._cache_kw = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"

    def _split_head(self) -> tuple[Any, Any]:
        """(decoder, head) when ``logits == head(decoder(x).last_hidden_state)`` holds (checked on a
        probe), so the head runs on read-out positions only; else ``(None, None)``: full logits."""
        get_decoder = getattr(self.model, "get_decoder", None)
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if get_decoder is None or head is None:
            return None, None
        decoder = get_decoder()
        probe = torch.tensor([[1, 2, 3, 4]], device=next(self.model.parameters()).device)
        try:
            with torch.inference_mode():
                full = self.model(input_ids=probe).logits
                split = head(decoder(input_ids=probe).last_hidden_state)
        except (TypeError, AttributeError, RuntimeError) as exc:
            log.info("scoring with full logits: decoder/head split unavailable (%s)", exc)
            return None, None
        if full.shape != split.shape or not torch.allclose(full.float(), split.float(), atol=1e-3, rtol=1e-3):
            log.info("scoring with full logits: this model transforms logits after its head")
            return None, None
        return decoder, head

    # ---------------------------------------------------------------- public
    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), continuation is greedy)`` per ``(context, continuation)``."""
        rows: dict[tuple[int, ...], _Row] = {}
        for index, (context, continuation) in enumerate(pairs):
            if not context or not continuation:
                raise ValueError(f"request {index}: context and continuation must be non-empty token lists")
            if len(continuation) > self.max_length:
                raise ValueError(f"request {index}: continuation of {len(continuation)} tokens exceeds max_length")
            tokens = tuple((list(context) + list(continuation))[-(self.max_length + 1) :][:-1])
            rows.setdefault(tokens, _Row(tokens)).readouts.append((index, tuple(continuation)))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        bar = tqdm(total=len(pairs), desc="Scoring", disable=not self.progress, leave=False)
        with torch.inference_mode():
            for group in plan_groups(list(rows.values()), reuse=self.prefix_reuse, min_prefix=self.min_prefix):
                self._score_group(group, results, bar)
        bar.close()
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- internals
    def _score_group(self, group: _Group, results: list, bar: tqdm) -> None:
        prefix_kv = None
        if group.prefix_len:
            prefix = torch.tensor([group.rows[0].tokens[: group.prefix_len]], device=self.device)
            self._count(group.prefix_len, 0)
            prefix_kv = [(k, v) for k, v, *_ in self._forward(prefix, None, use_cache=True)[1]]
        rows = sorted(group.rows, key=lambda r: -len(r.tokens))
        for batch in self._pack(rows, group.prefix_len):
            for row, scored in zip(batch, self._retrying(batch, group.prefix_len, prefix_kv), strict=True):
                for (index, _), value in zip(row.readouts, scored, strict=True):
                    results[index] = value
                bar.update(len(row.readouts))

    def _pack(self, rows: list[_Row], prefix: int) -> list[list[_Row]]:
        """Consecutive rows (longest first) while the batch fits the memory plan."""
        batches: list[list[_Row]] = []
        current: list[_Row] = []
        for row in rows:
            trial = [*current, row]
            seq = len(trial[0].tokens) - prefix
            reads = sum(r.max_k for r in trial)
            too_many = self.plan.max_rows is not None and len(trial) > self.plan.max_rows
            if current and (too_many or self.plan.batch_bytes(len(trial), seq, prefix, reads) > self.plan.budget_bytes):
                batches.append(current)
                trial = [row]
            current = trial
        if current:
            batches.append(current)
        return batches

    def _retrying(self, batch: list[_Row], prefix: int, prefix_kv: list | None) -> list[list[tuple[float, bool]]]:
        """Score a batch; on a real out-of-memory error shrink the plan and split the batch."""
        try:
            return self._score_batch(batch, prefix, prefix_kv)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            self.plan.shrink()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            log.warning("out of memory on %d rows; memory budget now %d MiB", len(batch), self.plan.budget_bytes >> 20)
            half = len(batch) // 2
            return self._retrying(batch[:half], prefix, prefix_kv) + self._retrying(batch[half:], prefix, prefix_kv)

    def _count(self, length: int, prefix: int) -> None:
        self.tokens += length
        self.attended += length * prefix + length * (length + 1) // 2

    def _forward(self, ids: torch.Tensor, kv: Any, use_cache: bool) -> tuple[torch.Tensor, Any]:
        """Hidden states (decoder mode) or logits (fallback), and the cache."""
        self.forwards += 1
        module = self._decoder or self.model
        out = module(input_ids=ids, use_cache=use_cache, **({self._cache_kw: kv} if kv is not None else {}))
        states = out.last_hidden_state if self._decoder is not None else out.logits
        return states, getattr(out, self._cache_kw, None) if use_cache else None

    def _score_batch(self, batch: list[_Row], prefix: int, prefix_kv: list | None) -> list[list[tuple[float, bool]]]:
        from transformers import DynamicCache

        lengths = [len(r.tokens) - prefix for r in batch]
        ids = torch.zeros((len(batch), max(lengths)), dtype=torch.long)  # right padding: causal rows never see it
        for b, row in enumerate(batch):
            ids[b, : lengths[b]] = torch.tensor(row.tokens[prefix:])
        kv = None
        if prefix_kv is not None:
            rows = len(batch)
            kv = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix_kv])
        states, _ = self._forward(ids.to(self.device), kv, use_cache=kv is not None)
        for length in lengths:
            self._count(length, prefix)

        # distinct read-out positions (row, position), then each request's targets at them
        positions: dict[tuple[int, int], int] = {}
        wanted: list[tuple[int, list[int], list[int]]] = []  # (row, position slots, targets)
        for b, row in enumerate(batch):
            for _, targets in row.readouts:
                start = lengths[b] - len(targets)
                slots = [positions.setdefault((b, start + j), len(positions)) for j in range(len(targets))]
                wanted.append((b, slots, list(targets)))
        where = torch.tensor(list(positions), device=self.device)
        picked = states[where[:, 0], where[:, 1]]
        logits = self._head(picked) if self._head is not None else picked
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1)

        slots = torch.tensor([s for _, ss, _ in wanted for s in ss], device=self.device)
        targets = torch.tensor([t for _, _, ts in wanted for t in ts], device=self.device)
        token_lp = logprobs[slots, targets].double().cpu().tolist()
        token_ok = (greedy[slots] == targets).cpu().tolist()
        out: list[list[tuple[float, bool]]] = [[] for _ in batch]
        at = 0
        for b, ss, _ in wanted:
            n = len(ss)
            out[b].append((float(sum(token_lp[at : at + n])), all(token_ok[at : at + n])))
            at += n
        return out

