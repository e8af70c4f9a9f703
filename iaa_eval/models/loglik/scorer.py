"""Fast log-likelihood scoring of (context, continuation) token pairs on a causal LM.

The numbers are lm-eval ``HFLM``'s: each pair is the input
``(context + continuation)[-(L+1):][:-1]`` (left truncation to the model's length ``L``) read out
at its last ``len(continuation)`` positions; log-probabilities are a log-softmax over the whole
vocabulary, ``is_greedy`` is the argmax test.
What differs is how little work gets there:

- **one row per distinct input**: the four one-token answers of a question share one input, so
  they cost one forward pass (HFLM's ``group_by="contexts"`` does the same);
- **shared-prefix reuse**: rows are sorted and grouped by their common token prefix (the few-shot
  block of an MMLU subject); each prefix is computed once per forward for all its rows;
- **long packed sequences** (:mod:`~iaa_eval.models.loglik.packing`): many groups' prefixes and rows
  back to back in one sequence, each row seeing only its prefix and itself; on CUDA flex attention
  skips the ~95% of attention blocks that nothing sees, elsewhere a dense mask keeps packs short;
  an 8B forward of one subject's ~35 rows is launch-bound, one of ~16k tokens is not;
- **only needed logits**: the decoder's hidden states are gathered at the read-out positions and
  only those go through the LM head, so a forward never holds ``(tokens, vocab)`` logits;
- **few host stalls**: each forward's inputs go to the device as one pinned buffer, its read-outs
  are one gather, and results come back once per call, so the host queues the next forward while
  the GPU works;
- **packs sized by memory and tokens**, not by count: a byte estimate against a budget sized once
  from free GPU memory, and a cap on tokens per forward; a real out-of-memory error halves the
  budget and re-plans (no probing).

Models whose attention cannot take a custom mask (flash-attention-2, sliding windows) get no
reuse: their rows run in right-padded batches, which plain causal attention handles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from iaa_eval.errors import NonFiniteOutput
from iaa_eval.models.loglik.memory import MAX_TOKENS, MemoryPlan
from iaa_eval.models.loglik.packing import (
    DENSE_ALIGN,
    FLEX_BLOCK,
    Pack,
    Segment,
    _Group,
    _Row,
    block_mask,
    dense_mask,
    pack_layout,
    plan_groups,
    plan_packs,
    to_device,
)

__all__ = ["MAX_TOKENS", "FastScorer", "MemoryPlan", "_Group", "_Row", "plan_groups"]

log = logging.getLogger(__name__)
# cuDNN attention plans a kernel per new (batch, query, key) shape; packs of varying lengths make a
# new shape almost every forward, and planning then costs more than the maths (measured on an
# H100: 2.2 s of 5.9 s). Flash / memory-efficient kernels need no planning.
_ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# implementations that honour a user-supplied 4D mask (flash-attention-2 does not)
_MASKABLE = ("sdpa", "eager", "flex_attention")


@dataclass
class _Pending:
    """A scored forward still on the device: ``values[0]`` log-probs, ``values[1]`` greedy flags,
    per target token; ``readouts`` says which request owns how many of them, in order."""

    values: torch.Tensor
    readouts: list[tuple[int, int]]


def _flex_ready(model: Any, device: torch.device) -> bool:
    """Flex attention compiles its kernel (with Triton on CUDA), and the model must take an
    attention implementation switch (``set_attn_implementation``) for the call."""
    try:
        from torch.nn.attention.flex_attention import BlockMask  # noqa: F401
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    return bool((device.type != "cuda" or has_triton()) and can_switch is not None and can_switch())


class FastScorer:
    """Scores token pairs like HFLM's ``_loglikelihood_tokens``, with the savings listed above.

    Args:
        model: a causal LM (``forward(input_ids, position_ids=..., attention_mask=...)`` returning
            ``.logits``).
        max_length: the model's context length ``L`` used for left truncation.
        batch_size: ``"auto"`` (memory budget only) or a cap on rows per forward.
        prefix_reuse: run shared prefixes once (off: every row in full, still packed).
        min_prefix: shortest shared prefix worth sharing.
        budget_bytes: override the memory budget (tests; CPU default 1 GiB).
        max_tokens: cap on tokens per forward (default ``MAX_TOKENS`` with flex attention,
            ``DENSE_MAX_TOKENS`` with a dense mask).
        flex: mask packs for flex attention (default: on CUDA where Triton and the model allow it;
            ``True`` elsewhere needs ``torch.compile`` to work there).
        progress: show a tqdm bar.

    Counters (the benchmark reports them): ``forwards``; ``tokens``, real tokens run;
    ``padded_tokens``, input slots including padding; ``attended``, causal (query, key) pairs of
    the real tokens; ``shapes``, ``(sequences, length, segments)`` of every forward.
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
        flex: bool | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.min_prefix = min_prefix
        self.progress = progress
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.forwards = self.tokens = self.padded_tokens = self.attended = 0
        self.shapes: list[tuple[int, int, int]] = []
        self._decoder, self._head = self._split_head()
        self.masked = self._maskable()
        self.prefix_reuse = prefix_reuse and self.masked
        wanted = self.device.type == "cuda" if flex is None else flex
        self.flex = self.masked and wanted and _flex_ready(model, self.device)
        self._sizing = (batch_size, budget_bytes, max_tokens)
        self.plan = MemoryPlan.for_model(model, *self._sizing, dense=not self.flex)

    def _split_head(self) -> tuple[Any, Any]:
        """(decoder, head) when ``logits == head(decoder(x).last_hidden_state)`` holds (checked on a
        probe), so the head runs on read-out positions only; else ``(None, None)``: full logits."""
        get_decoder = getattr(self.model, "get_decoder", None)
        head = (self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings")
                else None)
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
        if (full.shape != split.shape
                or not torch.allclose(full.float(), split.float(), atol=1e-3, rtol=1e-3)):
            log.info("scoring with full logits: this model transforms logits after its head")
            return None, None
        return decoder, head

    def _maskable(self) -> bool:
        """Packing passes a 4D mask and per-token positions: only attention implementations that
        honour such a mask qualify, and no sliding window shorter than the context (a 4D mask
        replaces the model's own window)."""
        config = (self.model.config.get_text_config()
                  if hasattr(self.model.config, "get_text_config") else self.model.config)
        window = (getattr(config, "sliding_window", None)
                  if getattr(config, "use_sliding_window", True) else None)
        sliding = any("sliding" in str(t) for t in getattr(config, "layer_types", None) or [])
        impl = getattr(config, "_attn_implementation", None) or "eager"
        if impl in _MASKABLE and not sliding and not (window and window < self.max_length):
            return True
        log.info("packing and prefix reuse off: attention %r / sliding window %r cannot take a 4D "
                 "mask", impl, window)
        return False

    # ---------------------------------------------------------------- public
    def score(self,
              pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), is greedy)`` per ``(context, continuation)``."""
        rows: dict[tuple[int, ...], _Row] = {}
        for index, (context, continuation) in enumerate(pairs):
            if not context or not continuation:
                raise ValueError(f"request {index}: context and continuation must be non-empty "
                                 "token lists")
            if len(continuation) > self.max_length:
                raise ValueError(f"request {index}: continuation of {len(continuation)} tokens "
                                 "exceeds max_length")
            whole = (*context, *continuation)  # left-truncated to L + 1, the last dropped
            tokens = whole[max(0, len(whole) - self.max_length - 1) : -1]
            rows.setdefault(tokens, _Row(tokens)).readouts.append((index, tuple(continuation)))
        groups = plan_groups(list(rows.values()), reuse=self.prefix_reuse,
                             min_prefix=self.min_prefix)
        return self._score_groups(groups, len(pairs))

    def _score_groups(self, groups: Sequence[_Group], n: int) -> list[tuple[float, bool]]:
        """Results for requests ``0 .. n-1``, read out of ``groups``' rows (any grouping is exact).
        Flex attention compiles its kernel on first use; where that fails (no working compiler, an
        unsupported GPU) the call is redone with dense masks, which give the same numbers."""
        try:
            return self._score_all(groups, n)
        except (RuntimeError, ImportError) as exc:
            if not self.flex or isinstance(exc, torch.OutOfMemoryError):
                raise
            log.warning("flex attention failed (%s: %s); scoring with dense masks from now on",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.flex = False
            self.plan = MemoryPlan.for_model(self.model, *self._sizing, dense=True)
            return self._score_all(groups, n)

    def _score_all(self, groups: Sequence[_Group], n: int) -> list[tuple[float, bool]]:
        """:meth:`_score_groups`' work; results come back to the host once, at the end (the only
        synchronisation)."""
        results: list[tuple[float, bool] | None] = [None] * n
        pending: list[_Pending] = []
        # closed however the loop ends: an interrupt's one-line message starts on its own line
        with (tqdm(total=n, desc="Scoring", disable=not self.progress, leave=False) as bar,
              torch.inference_mode(), sdpa_kernel(_ATTENTION_BACKENDS), self._attention()):
            for batch in self._plan(groups):
                pending += self._retrying(batch)
                bar.update(sum(len(r.readouts) for p in batch for r in p.rows))
        if not pending:
            return results  # type: ignore[return-value]
        values = torch.cat([p.values for p in pending], dim=1).cpu().tolist()
        if not all(math.isfinite(v) for v in values[0]):  # NaN, or an infinite logit at a target
            raise NonFiniteOutput(f"the model's logits are NaN or infinite ({n} requests); "
                                  "expected finite log-probabilities")
        at = 0
        for index, count in (r for p in pending for r in p.readouts):
            results[index] = (float(sum(values[0][at : at + count])),
                              all(values[1][at : at + count]))
            at += count
        return results  # type: ignore[return-value]

    @contextmanager
    def _attention(self) -> Iterator[None]:
        """Flex attention for the call's forwards (when used), the model's own attention after."""
        if not self.flex:
            yield
            return
        before = self.model.config._attn_implementation
        self.model.set_attn_implementation("flex_attention")
        try:
            yield
        finally:
            self.model.set_attn_implementation(before)

    # ---------------------------------------------------------------- planning
    def _plan(self, groups: Sequence[_Group]) -> list[list[Pack]]:
        """Forwards: one pack each with a mask; without one, single-row packs in right-padded
        batches (longest first) within the token, row and read-out caps."""
        plan = self.plan
        if self.masked:
            return [[p] for p in plan_packs(groups, plan.capacity, plan.max_rows, plan.max_reads)]
        rows = sorted((r for g in groups for r in g.rows), key=lambda r: -len(r.tokens))
        batches: list[list[_Row]] = []
        for row in rows:
            batch = batches[-1] if batches else []
            grown = len(batch) + 1
            if (not batch or grown * len(batch[0].tokens) > plan.capacity
                    or grown > (plan.max_rows or grown)
                    or sum(r.max_k for r in batch) + row.max_k > plan.max_reads):
                batches.append(batch := [])
            batch.append(row)
        return [[Pack([Segment(0, [row])]) for row in batch] for batch in batches]

    def _length(self, batch: list[Pack]) -> int:
        """Sequence length of a forward: flex packs all share the capacity's length (one compiled
        kernel), dense packs are aligned for the SDPA kernel, unmasked batches take their longest
        row."""
        longest = max(p.size for p in batch)
        if self.flex:
            longest = max(longest, self.plan.capacity)
            return -(-longest // FLEX_BLOCK) * FLEX_BLOCK
        return -(-longest // DENSE_ALIGN) * DENSE_ALIGN if self.masked else longest

    def _retrying(self, batch: list[Pack]) -> list[_Pending]:
        """Score one forward; on a real out-of-memory error shrink the plan and re-plan its rows."""
        try:
            return [self._score(batch)]
        except torch.OutOfMemoryError:
            if len(batch) == 1 and len(batch[0].rows) == 1:
                raise
            self.plan.shrink()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            rows = sum(len(p.rows) for p in batch)
            log.warning("out of memory on %d rows; memory budget now %d MiB", rows,
                        self.plan.budget_bytes >> 20)
            return [done for b in self._plan([g for p in batch for g in p.groups()])
                    for done in self._retrying(b)]

    # ---------------------------------------------------------------- internals
    def _count(self, batch: list[Pack], length: int) -> None:
        self.forwards += 1
        self.padded_tokens += len(batch) * length
        self.shapes.append((len(batch), length, sum(len(p.segments) for p in batch)))
        for segment in (s for p in batch for s in p.segments):
            prefix = segment.prefix_len
            self.tokens += segment.size
            self.attended += prefix * (prefix + 1) // 2
            for row in segment.rows:
                suffix = len(row.tokens) - prefix
                self.attended += suffix * prefix + suffix * (suffix + 1) // 2

    def _score(self, batch: list[Pack]) -> _Pending:
        """One forward over a batch of packs, then one gather of every read-out's log-probs."""
        layout = pack_layout(batch, self._length(batch))
        buffer = to_device(layout.buffer, self.device)
        ids, positions, segment, part, where, picks, targets = buffer.split(layout.sizes)
        mask = None
        if self.masked:
            mask = block_mask(segment, part) if self.flex else dense_mask(segment, part, self.dtype)
        shape = (layout.packs, layout.length)
        module = self._decoder or self.model
        # unmasked batches keep default positions: resets at the padding would read as packing
        placed = positions.view(shape) if self.masked else None
        out = module(input_ids=ids.view(shape), position_ids=placed, attention_mask=mask,
                     use_cache=False)
        states = out.last_hidden_state if self._decoder is not None else out.logits
        self._count(batch, layout.length)
        picked = states.reshape(-1, states.shape[-1]).index_select(0, where)
        logits = self._head(picked) if self._head is not None else picked
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = logprobs[picks, targets]
        greedy = logprobs.argmax(dim=-1)[picks] == targets
        return _Pending(torch.stack([chosen.double(), greedy.double()]), layout.readouts)
