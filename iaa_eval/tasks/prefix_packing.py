"""Planning and tensors for packing many prefix groups into one forward pass (used by ``FastScorer``).

One MMLU subject's suffix batch (~35 rows of ~100 tokens) is far too small to keep an 8B model's
GPU busy; a forward of that size is bound by kernel launches and host work. So rows of *several*
groups share a forward, each attending only to its own group's prefix:

- a **wave** is a set of groups whose prefixes are run (several per forward, right-padded, plain
  causal attention) and kept as one flat K/V store per layer, ``(prefix tokens, kv_heads, head_dim)``;
- a suffix batch takes rows of any groups of the wave, longest suffix first (least query padding);
  :class:`GatheredPrefixCache` gathers each row's prefix K/V from the store, padded to the batch's
  longest prefix, and joins it to the new K/V *one layer at a time* (nothing is retained, so a
  batch never holds all layers' K/V at once);
- an additive 4D mask ``(rows, 1, seq, prefix + seq)`` hides the prefix padding and keeps the suffix
  causal, and per-row ``position_ids`` start at each row's real prefix length. transformers returns a
  4D mask unchanged (``masking_utils._preprocess_mask_arguments``); SDPA takes it to the
  memory-efficient kernel, which wants the mask in the query's dtype and its key length a multiple
  of 8 (else it copies a padded mask every layer), hence the ``align`` of the key length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from transformers import DynamicCache

T = TypeVar("T")
KEY_ALIGN = 8  # the memory-efficient SDPA kernel's mask alignment (elements)


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
class Slot:
    """A row placed in a wave: its group's prefix length and where that prefix starts in the store."""

    row: _Row
    prefix: int
    offset: int

    @property
    def suffix(self) -> int:
        return len(self.row.tokens) - self.prefix


@dataclass
class Wave:
    """Groups whose prefixes are stored together (longest first) and all their rows (longest suffix first)."""

    groups: list[_Group]
    slots: list[Slot]


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


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy without stalling the host: a plain host-to-GPU copy waits for the GPU's queue to drain,
    a copy from pinned memory does not (the caching host allocator keeps the buffer until it is done)."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def prefix_layout(groups: Sequence[_Group]) -> tuple[torch.Tensor, list[int], int]:
    """One host buffer for a prefix batch: ids ``(groups * longest)`` right-padded with 0, then for each
    real token its batch row and position (to gather the cache). Returns (buffer, sizes, longest)."""
    longest = max(g.prefix_len for g in groups)
    ids: list[int] = []
    batch: list[int] = []
    position: list[int] = []
    for b, group in enumerate(groups):
        ids += group.rows[0].tokens[: group.prefix_len]
        ids += [0] * (longest - group.prefix_len)
        batch += [b] * group.prefix_len
        position += range(group.prefix_len)
    return torch.tensor(ids + batch + position, dtype=torch.long), [len(ids), len(batch), len(position)], longest


def pack(items: Sequence[T], fits: Callable[[list[T]], bool]) -> list[list[T]]:
    """Consecutive runs of ``items`` while ``fits(run)`` holds; an item that fits nowhere goes alone."""
    batches: list[list[T]] = []
    current: list[T] = []
    for item in items:
        if current and not fits([*current, item]):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def partition(lengths: Sequence[int], most: Callable[[int], int], step: float) -> list[tuple[int, int]]:
    """Cut items sorted longest first into consecutive batches, each padded to its first item's length,
    at the least ``padded tokens + step * batches`` (exact, by dynamic programming from the end). A
    batch starting at item ``i`` holds at most ``most(i)`` items (at least one). Greedy filling instead
    leaves a wave's last batch nearly empty and pads every other batch up to whatever bound it uses.
    Returns ``(start, stop)`` ranges."""
    n = len(lengths)
    cost = np.zeros(n + 1)
    take = np.ones(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        m = max(1, min(most(i), n - i))
        totals = np.arange(1, m + 1) * float(lengths[i]) + cost[i + 1 : i + m + 1]
        k = m - int(np.argmin(totals[::-1]))  # the largest batch among equally cheap ones
        take[i], cost[i] = k, totals[k - 1] + step
    cuts, i = [], 0
    while i < n:
        cuts.append((i, i + int(take[i])))
        i += int(take[i])
    return cuts


def plan_waves(groups: Sequence[_Group], fits: Callable[[list[_Group]], bool]) -> list[Wave]:
    """Waves of consecutive groups by prefix length, longest first, while ``fits`` holds (a store
    budget; a bound on how far prefix lengths may spread, as a batch's rows are padded to its longest
    prefix). Rows without a shared prefix join the last wave (shortest prefixes; no store needed)."""
    shared = sorted((g for g in groups if g.prefix_len), key=lambda g: -g.prefix_len)
    plain = [row for g in groups if not g.prefix_len for row in g.rows]
    chunks = pack(shared, fits) or ([[]] if plain else [])
    waves = []
    for i, chunk in enumerate(chunks):
        slots, offset = [], 0
        for group in chunk:
            slots += [Slot(row, group.prefix_len, offset) for row in group.rows]
            offset += group.prefix_len
        slots += [Slot(row, 0, 0) for row in plain] if i == len(chunks) - 1 else []
        slots.sort(key=lambda s: (-s.suffix, -s.prefix))
        waves.append(Wave(chunk, slots))
    return waves


def padded_prefix(slots: Sequence[Slot], seq: int, align: int = KEY_ALIGN) -> int:
    """The batch's past length: its longest prefix, padded so ``past + seq`` is a multiple of ``align``
    (0 when no row has a prefix: then there is no past at all)."""
    longest = max(s.prefix for s in slots)
    return longest + (-(longest + seq)) % align if longest else 0


@dataclass
class SuffixLayout:
    """A suffix batch laid out on the host, to be copied to the device as one buffer.

    ``buffer`` holds, in order: token ids ``(rows * seq)`` right-padded with 0; each row's prefix
    length and store offset ``(rows)`` twice; the distinct read-out positions in the flattened
    ``(rows * seq)`` states; per requested target token, its read-out's index and the token.
    ``readouts`` lists ``(request index, target tokens)`` in buffer order.
    """

    rows: int
    seq: int
    past: int
    buffer: torch.Tensor
    sizes: list[int]
    readouts: list[tuple[int, int]]


def suffix_layout(slots: Sequence[Slot]) -> SuffixLayout:
    """Everything the batch's forward and read-out need, built with plain Python and one tensor."""
    seq = max(s.suffix for s in slots)
    ids: list[int] = []
    positions: dict[int, int] = {}
    picks: list[int] = []
    targets: list[int] = []
    readouts: list[tuple[int, int]] = []
    for b, slot in enumerate(slots):
        tokens = slot.row.tokens[slot.prefix :]
        ids += tokens
        ids += [0] * (seq - len(tokens))  # right padding: causal rows never see it
        for index, wanted in slot.row.readouts:
            start = b * seq + len(tokens) - len(wanted)
            picks += [positions.setdefault(start + j, len(positions)) for j in range(len(wanted))]
            targets += wanted
            readouts.append((index, len(wanted)))
    head = [s.prefix for s in slots] + [s.offset for s in slots]
    buffer = torch.tensor(ids + head + list(positions) + picks + targets, dtype=torch.long)
    sizes = [len(ids), len(slots), len(slots), len(positions), len(picks), len(targets)]
    return SuffixLayout(len(slots), seq, padded_prefix(slots, seq), buffer, sizes, readouts)


def additive_mask(prefix_lens: torch.Tensor, past: int, seq: int, dtype: torch.dtype) -> torch.Tensor:
    """``(rows, 1, seq, past + seq)``: 0 where a query may look (its row's real prefix, then its own
    suffix causally), the dtype's minimum elsewhere (finite: no NaN even in an all-masked row)."""
    device = prefix_lens.device
    key = torch.arange(past + seq, device=device)
    query = torch.arange(seq, device=device)
    in_prefix = key[None, None, :] < prefix_lens[:, None, None]  # (rows, 1, keys)
    causal = (key[None, :] >= past) & (key[None, :] - past <= query[:, None])  # (seq, keys)
    visible = in_prefix | causal[None]
    mask = torch.full(visible.shape, torch.finfo(dtype).min, dtype=dtype, device=device)
    return mask.masked_fill_(visible, 0.0)[:, None]


class PrefixStore:
    """One wave's prefix K/V, per layer ``(tokens, kv_heads, head_dim)``: groups back to back."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.layers = layers

    @classmethod
    def from_cache(cls, cache: Any, batch: torch.Tensor, position: torch.Tensor) -> PrefixStore:
        """The real tokens ``(batch[i], position[i])`` of a right-padded prefix batch's cache, one
        gather per tensor."""
        return cls([(k.transpose(1, 2)[batch, position], v.transpose(1, 2)[batch, position]) for k, v, *_ in cache])

    @classmethod
    def join(cls, parts: Sequence[PrefixStore]) -> PrefixStore:
        """Stores of consecutive prefix batches as one (groups keep their order)."""
        if len(parts) == 1:
            return parts[0]
        return cls([(torch.cat([p.layers[i][0] for p in parts]), torch.cat([p.layers[i][1] for p in parts]))
                    for i in range(len(parts[0].layers))])


class GatheredPrefixCache(DynamicCache):
    """The past of a packed suffix batch: each row's prefix from a :class:`PrefixStore`, gathered per
    layer as the model asks for it and joined to the batch's new K/V; nothing is retained (the
    scorer never decodes), so peak memory holds one layer's keys, not all layers'.

    It also carries what the rows' different pasts imply for the forward: the additive mask and the
    per-row position ids (``FastScorer._forward`` passes them on).
    """

    def __init__(self, store: PrefixStore, prefix_lens: torch.Tensor, offsets: torch.Tensor, past: int,
                 seq: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.store = store
        self.rows, self.past = len(prefix_lens), past
        last = (prefix_lens - 1).clamp_min(0)[:, None]  # padded slots repeat a real token; the mask hides them
        steps = torch.arange(past, device=prefix_lens.device)[None, :]
        self.index = (torch.minimum(steps, last) + offsets[:, None]).reshape(-1)
        self.mask = additive_mask(prefix_lens, past, seq, dtype)
        self.positions = prefix_lens[:, None] + torch.arange(seq, device=prefix_lens.device)[None, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, kv_heads, past + seq, head_dim)`` keys and values for layer ``layer_idx``."""
        keys, values = self.store.layers[layer_idx]
        return self._join(keys, key_states), self._join(values, value_states)

    def _join(self, stored: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        past = stored.index_select(0, self.index).view(self.rows, self.past, *stored.shape[1:])
        return torch.cat([past.transpose(1, 2), new], dim=2)
