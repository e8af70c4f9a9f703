"""Packing prefix groups into long sequences, one forward each (used by ``FastScorer``).

One MMLU subject's questions (~35 rows of ~100 tokens after a ~600-token few-shot prefix) are far
too little work to keep an 8B model's GPU busy, and re-running the prefix for every row wastes
80% of the tokens. So the scorer lays many groups out *back to back in one sequence*:

    [prefix A][row A1][row A2]...[prefix B][row B1]...[padding]

and gives every token a position (each row continues its prefix's positions, as if it stood
alone), a segment (its group's place in the pack) and a part (0 for a prefix, ``1 + i`` for the
i-th row). A query may see a key when both are in the same segment, the key is not later, and the
key belongs to the prefix or to the query's own row. Every row thus attends exactly as it would
unpacked, the prefix is computed once per pack, and no K/V is copied or padded per row.

The mask reaches attention in one of two forms, from the same layout:

- :func:`dense_mask`: an additive ``(1, 1, T, T)`` mask for SDPA/eager attention (CPU, or where
  flex attention is unavailable); its cost grows with ``T**2``, so such packs stay short;
- :func:`block_mask`: a flex-attention ``BlockMask``, built from the layout block by block, whose
  kernel skips every 128x128 block in which nothing is visible (on MMLU 5-shot packs of 16k tokens
  about 95% of them), so packs can be as long as memory allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

FLEX_BLOCK = 128  # flex attention's block size (tokens)
DENSE_ALIGN = 8  # the memory-efficient SDPA kernel's mask alignment (elements)


@dataclass
class _Row:
    """One distinct model input and the requests read out at its tail."""

    tokens: tuple[int, ...]
    readouts: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)  # (request, targets)

    @property
    def max_k(self) -> int:
        return max(len(t) for _, t in self.readouts)


@dataclass
class _Group:
    """Rows sharing their first ``prefix_len`` tokens (0: no shared prefix)."""

    prefix_len: int
    rows: list[_Row]


def _lcp(a: tuple[int, ...], b: tuple[int, ...], limit: int) -> int:
    """Length of the common prefix (at most ``limit``): slices compared in C, halving the range
    (a Python loop over ~500-token MMLU prompts cost more than all the grouping)."""
    lo, hi = 0, min(len(a), len(b), limit)  # a[:lo] == b[:lo]; the answer lies in lo .. hi
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


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
    links = [_lcp(order[i].tokens, order[i + 1].tokens, min(room[i], room[i + 1]))
             for i in range(len(order) - 1)]
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
    a copy from pinned memory does not (the caching host allocator keeps the buffer until done)."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


# ---------------------------------------------------------------- packs
@dataclass
class Segment:
    """A group's prefix (``prefix_len`` tokens, possibly none) followed by some of its rows'
    suffixes."""

    prefix_len: int
    rows: list[_Row]

    @property
    def size(self) -> int:
        return self.prefix_len + sum(len(r.tokens) - self.prefix_len for r in self.rows)


@dataclass
class Pack:
    """Segments laid out back to back in one sequence."""

    segments: list[Segment] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def rows(self) -> list[_Row]:
        return [r for s in self.segments for r in s.rows]

    def groups(self) -> list[_Group]:
        """The pack's rows as groups again (to re-plan them, e.g. into smaller packs)."""
        return [_Group(s.prefix_len, s.rows) for s in self.segments]


def plan_packs(groups: Sequence[_Group], capacity: int, max_rows: int | None = None,
               max_reads: int | None = None) -> list[Pack]:
    """Every group's rows in packs of at most ``capacity`` tokens, ``max_rows`` rows and
    ``max_reads`` read-out positions.

    Groups fill packs in order. A group that does not fit in what is left of a pack is split when
    the rows that do fit carry at least as many tokens as its prefix (the next pack runs the prefix
    again); otherwise the pack is closed. A row longer than ``capacity`` gets a pack of its own.
    Rows without a shared prefix (``prefix_len`` 0) share a segment but still see only themselves.
    """
    packs = [Pack()]
    for group in groups:
        rows = list(group.rows)
        while rows:
            current = packs[-1]
            room = capacity - current.size - group.prefix_len
            row_room = len(rows) if max_rows is None else max_rows - len(current.rows)
            read_room = max_reads - sum(r.max_k for r in current.rows) if max_reads else None
            taken = carried = reads = 0
            while taken < min(len(rows), row_room):
                length = len(rows[taken].tokens) - group.prefix_len
                reads += rows[taken].max_k
                if carried + length > room or (read_room is not None and reads > read_room):
                    break
                carried += length
                taken += 1
            if not current.segments:
                taken = max(taken, 1)
            elif taken < len(rows) and (not taken or carried < group.prefix_len):
                packs.append(Pack())
                continue
            current.segments.append(Segment(group.prefix_len, rows[:taken]))
            rows = rows[taken:]
            if rows:
                packs.append(Pack())
    return [p for p in packs if p.segments]


@dataclass
class PackLayout:
    """Packs laid out on the host as a ``(len(packs), length)`` batch, to go to the device as one
    buffer.

    ``buffer`` holds, each ``(packs * length)``: token ids, positions, segments (-1: padding), parts
    (0: a prefix token, ``1 + i``: the segment's i-th row, -1: padding); then the distinct read-out
    positions in the flattened batch; per target token, its read-out's index and the token.
    ``readouts`` lists ``(request index, target tokens)`` in buffer order.
    """

    packs: int
    length: int
    buffer: torch.Tensor
    sizes: list[int]
    readouts: list[tuple[int, int]]


def pack_layout(packs: Sequence[Pack], length: int) -> PackLayout:
    """Everything a batch of packs needs, built with plain Python and one tensor."""
    ids: list[int] = []
    positions: list[int] = []
    segment: list[int] = []
    part: list[int] = []
    where: dict[int, int] = {}
    picks: list[int] = []
    targets: list[int] = []
    readouts: list[tuple[int, int]] = []
    for pack in packs:
        start = len(ids)
        for s, seg in enumerate(pack.segments):
            head = seg.rows[0].tokens[: seg.prefix_len]
            ids += head
            positions += range(seg.prefix_len)
            segment += [s] * seg.prefix_len
            part += [0] * seg.prefix_len
            for i, row in enumerate(seg.rows, start=1):
                tail = row.tokens[seg.prefix_len :]
                ids += tail
                positions += range(seg.prefix_len, len(row.tokens))
                segment += [s] * len(tail)
                part += [i] * len(tail)
                for index, wanted in row.readouts:
                    first = len(ids) - len(wanted)
                    picks += [where.setdefault(first + j, len(where)) for j in range(len(wanted))]
                    targets += wanted
                    readouts.append((index, len(wanted)))
        pad = length - (len(ids) - start)
        if pad < 0:
            raise ValueError(f"a pack of {len(ids) - start} tokens does not fit a layout of "
                             f"{length}")
        ids += [0] * pad
        positions += [0] * pad
        segment += [-1] * pad
        part += [-1] * pad
    buffer = torch.tensor(ids + positions + segment + part + list(where) + picks + targets,
                          dtype=torch.long)
    sizes = [len(ids)] * 4 + [len(where), len(picks), len(targets)]
    return PackLayout(len(packs), length, buffer, sizes, readouts)


# ---------------------------------------------------------------- masks
def visible(segment: torch.Tensor, part: torch.Tensor, query: torch.Tensor,
            key: torch.Tensor) -> torch.Tensor:
    """Whether ``query`` may attend to ``key`` (indices into one pack): same segment, not later, and
    the key is a prefix token or in the query's own row. Also flex attention's ``mask_mod``."""
    return ((segment[query] == segment[key]) & (key <= query)
            & ((part[key] == 0) | (part[key] == part[query])))


def dense_mask(segment: torch.Tensor, part: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(1, 1, T, T)`` additive mask of one pack: 0 where visible, the dtype's minimum elsewhere
    (finite, so a padding row gives no NaN)."""
    index = torch.arange(len(segment), device=segment.device)
    seen = visible(segment, part, index[:, None], index[None, :])
    mask = torch.zeros(seen.shape, dtype=dtype, device=seen.device)
    return mask.masked_fill_(~seen, torch.finfo(dtype).min)[None, None]


def block_mask(segment: torch.Tensor, part: torch.Tensor, *, chunk: int = 16) -> torch.Tensor:
    """Flex attention's ``BlockMask`` of one pack (``len(segment)`` a multiple of ``FLEX_BLOCK``),
    from the layout: each block of queries x keys is empty, full, or partial (then
    :func:`visible` decides per element). The dense mask is evaluated ``chunk`` query blocks at a
    time, never all at once; building it through ``create_block_mask(_compile=True)`` took minutes
    to compile on an H100."""
    from torch.nn.attention.flex_attention import BlockMask

    length = len(segment)
    if length % FLEX_BLOCK:
        raise ValueError(f"a flex pack's length must be a multiple of {FLEX_BLOCK}, got {length}")
    n = length // FLEX_BLOCK
    keys = torch.arange(length, device=segment.device)
    partial, full = [], []
    for start in range(0, n, chunk):
        queries = keys[start * FLEX_BLOCK : min(n, start + chunk) * FLEX_BLOCK]
        seen = visible(segment, part, queries[:, None], keys[None, :])
        seen = seen.view(-1, FLEX_BLOCK, n, FLEX_BLOCK)
        some, every = seen.any(dim=3).any(dim=1), seen.all(dim=3).all(dim=1)
        partial.append(some & ~every)
        full.append(every)

    def blocks(flags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per query block: how many key blocks are flagged, and their indices first."""
        table = torch.cat(flags)
        order = torch.argsort(table.to(torch.int8), dim=-1, descending=True, stable=True)
        return table.sum(-1, dtype=torch.int32)[None, None], order.to(torch.int32)[None, None]

    def mask_mod(batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor,
                 key: torch.Tensor) -> torch.Tensor:
        return visible(segment, part, query, key)

    return BlockMask.from_kv_blocks(*blocks(partial), *blocks(full), BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(length, length))
