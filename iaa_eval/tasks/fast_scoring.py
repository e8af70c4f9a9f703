"""Fast log-likelihood scoring of (context, continuation) token pairs on a causal LM.

The numbers are lm-eval ``HFLM``'s: each pair is the input ``(context + continuation)[-(L+1):][:-1]``
(left truncation to the model's length ``L``) read out at its last ``len(continuation)`` positions;
log-probabilities are a log-softmax over the whole vocabulary, ``is_greedy`` is the argmax test.
What differs is how little work gets there:

- **one row per distinct input**: the four one-token answers of a question share one input, so
  they cost one forward pass (HFLM's ``group_by="contexts"`` does the same);
- **shared-prefix reuse**: rows are sorted and grouped by their common token prefix (the few-shot
  block of an MMLU subject); each prefix is run once and its KV cache serves its rows' suffixes;
- **big forwards across groups** (:mod:`~iaa_eval.tasks.prefix_packing`): several groups' prefixes
  run in one forward, and suffix rows of several groups share one forward, each row attending only
  to its own prefix (gathered K/V, a 4D mask, per-row positions); an 8B forward of one subject's
  ~35 rows is launch-bound, one of ~16k tokens is not;
- **only needed logits**: the decoder's hidden states are gathered at the read-out positions and
  only those go through the LM head, so a batch never holds ``(batch, seq, vocab)`` logits;
- **few host stalls**: each batch's inputs go to the device as one pinned buffer, its read-outs are
  one gather, and results come back once per wave, so the host queues the next batch while the
  GPU works;
- **batches packed by memory and tokens**, not by count: a byte estimate (activations, keys,
  mask, prefix store) against a budget sized once from free GPU memory, and a cap on tokens per
  forward; a real out-of-memory error halves the budget and splits the batch (no probing).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from iaa_eval.errors import NonFiniteOutput
from iaa_eval.tasks.prefix_packing import (
    GatheredPrefixCache,
    PrefixStore,
    Slot,
    Wave,
    _Group,
    _Row,
    pack,
    padded_prefix,
    partition,
    plan_groups,
    plan_waves,
    prefix_layout,
    suffix_layout,
    to_device,
)

__all__ = ["FastScorer", "MemoryPlan", "_Group", "_Row", "plan_groups"]

log = logging.getLogger(__name__)
# cuDNN attention plans a kernel per new (batch, query, key) shape; packed batches of varying
# lengths make a new shape almost every forward, and planning then costs more than the maths
# (measured on an H100: 2.2 s of 5.9 s). Flash / memory-efficient kernels need no planning.
_ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# implementations that honour a user-supplied 4D additive mask (flash-attention-2 / flex do not)
_MASKABLE = ("sdpa", "eager")

CPU_BUDGET_BYTES = 1 << 30
GPU_MEMORY_FRACTION = 0.85
MAX_TOKENS = 16384  # past ~8-16k tokens an 8B forward is matmul-bound; bigger ones only cost memory
STORE_SHARE = 4  # a wave's prefix store may take 1/STORE_SHARE of the budget
# Packing heuristics, from the MMLU 5-shot plan on an 8B model (prefixes 199-2347 tokens): a wave that
# already has a full forward of suffix tokens takes no group with a prefix under 1/PREFIX_SPREAD of its
# longest (padded keys cost gathers, copies and attention). Batches are cut at the least padded tokens
# plus FORWARD_COST x the token cap per forward: a forward's fixed cost (launches, weight reads, a
# small matmul's lower efficiency), so padding is only traded for fewer forwards where it is cheaper.
PREFIX_SPREAD = 2.0
FORWARD_COST = 1 / 8
T = TypeVar("T")


@dataclass
class MemoryPlan:
    """Bytes a batch needs, from the model's shape, against a budget.

    Args:
        act_bytes: transient activation bytes per input token (one layer's MLP and attention inputs).
        kv_bytes: KV bytes per cached token (all layers, keys and values): prefix forwards and the store.
        key_bytes: bytes per attended key per row in one layer (gathered past, joined K/V, K/V repeated
            to the query heads), live one layer at a time.
        mask_bytes: bytes per element of the additive mask (the model's dtype).
        logit_bytes: bytes per read-out position (a float32 vocabulary row, twice for the log-softmax).
        budget_bytes: what a batch (and its wave's prefix store) may use.
        max_rows: a fixed ``batch_size`` caps rows per batch as well.
        max_tokens: cap on padded input tokens per forward.
    """

    act_bytes: int
    kv_bytes: int
    key_bytes: int
    mask_bytes: int
    logit_bytes: int
    budget_bytes: int
    max_rows: int | None = None
    max_tokens: int = MAX_TOKENS

    @classmethod
    def for_model(cls, model: Any, batch_size: int | str, budget_bytes: int | None = None,
                  max_tokens: int | None = None) -> MemoryPlan:
        """Size from the config; ``batch_size="auto"`` on CUDA reads free memory once."""
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        hidden = config.hidden_size
        inter = getattr(config, "intermediate_size", 4 * hidden)
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        size = next(model.parameters()).element_size()
        kv = 2 * config.num_hidden_layers * kv_heads * head_dim * size
        keys = 2 * head_dim * size * (2 * kv_heads + heads)
        if budget_bytes is None:
            device = next(model.parameters()).device
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                budget_bytes = int(free * GPU_MEMORY_FRACTION)
            else:
                budget_bytes = CPU_BUDGET_BYTES
        max_rows = batch_size if isinstance(batch_size, int) else None
        return cls(size * (6 * hidden + 3 * inter), kv, keys, size, 8 * config.vocab_size, budget_bytes, max_rows,
                   max_tokens or MAX_TOKENS)

    def batch_bytes(self, rows: int, seq: int, past: int, readouts: int) -> int:
        """Estimate for ``rows`` inputs of ``seq`` new tokens after ``past`` gathered ones."""
        keys = past + seq
        mask = self.mask_bytes * rows * seq * keys if past else 0
        return self.act_bytes * rows * seq + self.key_bytes * rows * keys + mask + self.logit_bytes * readouts

    def prefix_bytes(self, rows: int, seq: int) -> int:
        """A prefix batch: activations, its full cache and the gathered copy for the store."""
        return self.batch_bytes(rows, seq, 0, 0) + 2 * self.kv_bytes * rows * seq

    def fits(self, rows: int, seq: int, nbytes: int, reserved: int = 0) -> bool:
        """Row cap, token cap and bytes against the budget less ``reserved``."""
        too_many = self.max_rows is not None and rows > self.max_rows
        return not too_many and rows * seq <= self.max_tokens and nbytes <= self.budget_bytes - reserved

    def shrink(self) -> None:
        """After a real out-of-memory error: half the budget (and the caps) from now on."""
        self.budget_bytes //= 2
        self.max_tokens = max(1, self.max_tokens // 2)
        if self.max_rows is not None:
            self.max_rows = max(1, self.max_rows // 2)


@dataclass
class _Pending:
    """A scored batch still on the device: ``values[0]`` log-probs, ``values[1]`` greedy flags, per
    target token; ``readouts`` says which request owns how many of them, in order."""

    values: torch.Tensor
    readouts: list[tuple[int, int]]


class FastScorer:
    """Scores token pairs like HFLM's ``_loglikelihood_tokens``, with the savings listed above.

    Args:
        model: a causal LM (``forward(input_ids, cache=...)`` returning ``.logits``).
        max_length: the model's context length ``L`` used for left truncation.
        batch_size: ``"auto"`` (memory budget only) or a cap on rows per batch.
        prefix_reuse: run shared prefixes once (off: every row in full).
        min_prefix: shortest shared prefix worth a separate pass.
        budget_bytes: override the memory budget (tests; CPU default 1 GiB).
        max_tokens: cap on padded input tokens per forward (default ``MAX_TOKENS``).
        progress: show a tqdm bar.

    Counters (the benchmark reports them): ``forwards``; ``tokens``, real tokens run;
    ``padded_tokens``, input slots including padding; ``attended``, causal (query, key) pairs of
    the real tokens; ``shapes``, ``(rows, seq, past)`` of every forward.
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
        max_tokens: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.min_prefix = min_prefix
        self.progress = progress
        self.plan = MemoryPlan.for_model(model, batch_size, budget_bytes, max_tokens)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.forwards = self.tokens = self.padded_tokens = self.attended = 0
        self.shapes: list[tuple[int, int, int]] = []
        self._decoder, self._head = self._split_head()
        forward = (self._decoder or model).forward
        self._cache_kw = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
        self.prefix_reuse = prefix_reuse and self._packable()

    def _split_head(self) -> tuple[Any, Any]:
        """(decoder, head) when ``logits == head(decoder(x).last_hidden_state)`` holds (checked on a
        probe), so the head runs on read-out positions only; else ``(None, None)``: full logits."""
        get_decoder = getattr(self.model, "get_decoder", None)
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if get_decoder is None or head is None:
            return None, None
        decoder = get_decoder()
        probe = torch.tensor([[1, 2, 3, 4]], device=self.device)
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

    def _packable(self) -> bool:
        """Prefix reuse passes a 4D mask and per-row positions: only attention implementations that
        honour such a mask qualify, and no sliding window shorter than the context (a 4D mask
        replaces the model's own window)."""
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        sliding = any("sliding" in str(t) for t in getattr(config, "layer_types", None) or [])
        impl = getattr(config, "_attn_implementation", None) or "eager"
        if impl in _MASKABLE and not sliding and not (window and window < self.max_length):
            return True
        log.info("prefix reuse off: attention %r / sliding window %r cannot take a packed 4D mask", impl, window)
        return False

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
        groups = plan_groups(list(rows.values()), reuse=self.prefix_reuse, min_prefix=self.min_prefix)
        return self._score_groups(groups, len(pairs))

    def _score_groups(self, groups: Sequence[_Group], n: int) -> list[tuple[float, bool]]:
        """Results for requests ``0 .. n-1``, read out of ``groups``' rows (any grouping is exact)."""
        results: list[tuple[float, bool] | None] = [None] * n
        bar = tqdm(total=n, desc="Scoring", disable=not self.progress, leave=False)
        with torch.inference_mode(), sdpa_kernel(_ATTENTION_BACKENDS):
            for wave in plan_waves(groups, self._wave_fits):
                self._score_wave(wave, results, bar)
        bar.close()
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- planning
    def _wave_fits(self, groups: list[_Group]) -> bool:
        """Groups sorted by prefix length, longest first: the store within its share of the budget,
        and the prefix spread bounded once the wave has a full forward's worth of suffix tokens."""
        if self.plan.kv_bytes * sum(g.prefix_len for g in groups) > self.plan.budget_bytes // STORE_SHARE:
            return False
        work = sum(len(r.tokens) - g.prefix_len for g in groups[:-1] for r in g.rows)
        return groups[0].prefix_len <= PREFIX_SPREAD * groups[-1].prefix_len or work < self.plan.max_tokens

    def _batches(self, items: list[T], lengths: list[int], fits: Callable[[list[T]], bool]) -> list[list[T]]:
        """Items sorted longest first, cut at the least padding plus per-forward cost under the token and
        row caps (:func:`partition`); a part over the memory budget is split further by ``fits``."""
        cap, rows = self.plan.max_tokens, self.plan.max_rows or len(items)
        cuts = partition(lengths, lambda i: min(rows, cap // max(1, lengths[i])), FORWARD_COST * cap)
        return [batch for start, stop in cuts for batch in pack(items[start:stop], fits)]

    def _prefix_batches(self, groups: list[_Group]) -> list[list[_Group]]:
        """A wave's groups (longest prefix first) in prefix forwards."""
        return self._batches(groups, [g.prefix_len for g in groups], self._prefixes_fit)

    def _suffix_batches(self, slots: list[Slot], reserved: int) -> list[list[Slot]]:
        """A wave's rows (longest suffix first) in suffix forwards, next to ``reserved`` store bytes."""
        return self._batches(slots, [s.suffix for s in slots], lambda trial: self._suffixes_fit(trial, reserved))

    def _prefixes_fit(self, groups: list[_Group]) -> bool:
        seq = max(g.prefix_len for g in groups)
        nbytes = self.plan.prefix_bytes(len(groups), seq)
        return self.plan.fits(len(groups), seq, nbytes, self.plan.budget_bytes // STORE_SHARE)

    def _suffixes_fit(self, slots: list[Slot], reserved: int) -> bool:
        """Slots sorted by suffix length, longest first (it sets the batch's ``seq``)."""
        seq = slots[0].suffix
        reads = sum(s.row.max_k for s in slots)
        nbytes = self.plan.batch_bytes(len(slots), seq, padded_prefix(slots, seq), reads)
        return self.plan.fits(len(slots), seq, nbytes, reserved)

    # ---------------------------------------------------------------- internals
    def _score_wave(self, wave: Wave, results: list, bar: tqdm) -> None:
        """Prefixes into a store, then every row of the wave in packed batches; results come back
        to the host once, at the end (the only synchronisation of the wave)."""
        store = None
        if wave.groups:
            parts: list[PrefixStore] = []
            for batch in self._prefix_batches(wave.groups):
                parts += self._retrying(batch, lambda b: [self._run_prefixes(b)])
            store = PrefixStore.join(parts)
        reserved = self.plan.kv_bytes * sum(g.prefix_len for g in wave.groups)
        pending: list[_Pending] = []
        for batch in self._suffix_batches(wave.slots, reserved):
            pending += self._retrying(batch, lambda b: [self._score_batch(b, store)])
            bar.update(sum(len(s.row.readouts) for s in batch))
        if not pending:
            return
        values = torch.cat([p.values for p in pending], dim=1).cpu().tolist()
        if any(math.isnan(v) for v in values[0]):
            raise NonFiniteOutput(f"the model's logits are NaN (a wave of {len(wave.slots)} rows); "
                                  "expected finite log-probabilities")
        at = 0
        for index, n in (r for p in pending for r in p.readouts):
            results[index] = (float(sum(values[0][at : at + n])), all(values[1][at : at + n]))
            at += n

    def _retrying(self, items: list[T], run: Callable[[list[T]], list]) -> list:
        """``run(items)``; on a real out-of-memory error shrink the plan and run the halves (a batch of
        several groups splits like any other)."""
        try:
            return run(items)
        except torch.OutOfMemoryError:
            if len(items) == 1:
                raise
            self.plan.shrink()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            log.warning("out of memory on %d rows; memory budget now %d MiB", len(items), self.plan.budget_bytes >> 20)
            half = len(items) // 2
            return self._retrying(items[:half], run) + self._retrying(items[half:], run)

    def _count(self, length: int, past: int) -> None:
        self.tokens += length
        self.attended += length * past + length * (length + 1) // 2

    def _forward(self, ids: torch.Tensor, kv: Any, use_cache: bool) -> tuple[torch.Tensor, Any]:
        """Hidden states (decoder mode) or logits (fallback), and the cache. A gathered past brings
        its rows' mask and position ids along."""
        self.forwards += 1
        self.padded_tokens += ids.numel()
        self.shapes.append((ids.shape[0], ids.shape[1], getattr(kv, "past", 0)))
        module = self._decoder or self.model
        extra: dict[str, Any] = {self._cache_kw: kv} if kv is not None else {}
        if isinstance(kv, GatheredPrefixCache):
            extra.update(attention_mask=kv.mask, position_ids=kv.positions)
        out = module(input_ids=ids, use_cache=use_cache, **extra)
        states = out.last_hidden_state if self._decoder is not None else out.logits
        return states, getattr(out, self._cache_kw, None) if use_cache else None

    def _run_prefixes(self, groups: list[_Group]) -> PrefixStore:
        """Several groups' prefixes in one right-padded causal forward (padding comes after every
        real token, so no mask is needed); their real tokens' K/V become a store."""
        buffer, sizes, longest = prefix_layout(groups)
        ids, batch, position = to_device(buffer, self.device).split(sizes)
        _, cache = self._forward(ids.view(len(groups), longest), None, use_cache=True)
        for group in groups:
            self._count(group.prefix_len, 0)
        return PrefixStore.from_cache(cache, batch, position)

    def _score_batch(self, slots: list[Slot], store: PrefixStore | None) -> _Pending:
        """One forward over rows of any groups, then one gather of every read-out's log-probs."""
        layout = suffix_layout(slots)
        ids, prefix_lens, offsets, where, picks, targets = to_device(layout.buffer, self.device).split(layout.sizes)
        kv = None
        if layout.past:
            if store is None:
                raise RuntimeError("rows with a prefix need their wave's prefix store")
            kv = GatheredPrefixCache(store, prefix_lens, offsets, layout.past, layout.seq, self.dtype)
        states, _ = self._forward(ids.view(layout.rows, layout.seq), kv, use_cache=kv is not None)
        for slot in slots:
            self._count(slot.suffix, slot.prefix)
        picked = states.reshape(-1, states.shape[-1]).index_select(0, where)
        logits = self._head(picked) if self._head is not None else picked
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = logprobs[picks, targets]
        greedy = logprobs.argmax(dim=-1)[picks] == targets
        return _Pending(torch.stack([chosen.double(), greedy.double()]), layout.readouts)
