"""The one way requests reach a model: cache look-up, sharding, compute, write-back, merge.

Text requests (lm-eval's log-likelihoods, rolling log-likelihoods and ``generate_until``, from
:mod:`iaa_eval.tasks.lm_bridge`) and multimodal generation requests (from
:mod:`iaa_eval.tasks.multimodal`) are described by their callers as cache keys, arguments and a
``compute`` function; :meth:`RequestPath.answer` does the rest the same way for both:

1. after a barrier (so every rank sees the same cache state and all agree on what is left), look
   the keys up in the run's request cache and count what was asked and what the cache answered;
2. group what is left into units (e.g. all options of one lm-eval context: scored together, in one
   forward, on one rank);
3. cut the units into chunks of about ``commit`` requests per rank, and per chunk compute the
   units across ranks (:meth:`Shards.map`), store the answers (the writer rank alone, one
   transaction per chunk) and keep them;
4. return every answer in the order asked.

Each rank logs the requests it holds (how many, the first and last by position and cache key):
ranks of one run show disjoint shares, and processes that a stale launcher started apart (each
rank 0 of 1, each computing everything) show at once.

A killed run keeps every finished chunk, and a rerun's chunks line up with the first attempt's
(the cached requests are taken out before chunking), so resumed numbers are bit-identical to
uninterrupted ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

from iaa_eval.runner.cache import RequestCache
from iaa_eval.runner.distributed import Shards

T = TypeVar("T")
log = logging.getLogger(__name__)


class RequestPath:
    """A task's way to its model, through the run's request cache and across the ranks.

    Args:
        cache: the run's request cache (``None``: nothing is looked up or stored).
        shards: this process's place among the ranks (default: alone).
        label: the progress bar's title.

    ``asked`` and ``cached`` count the requests asked and those the cache answered.
    """

    def __init__(
        self,
        cache: RequestCache | None = None,
        shards: Shards | None = None,
        label: str = "requests",
    ) -> None:
        self.cache = cache
        self.shards = shards or Shards()
        self.label = label
        self.asked = 0
        self.cached = 0
        self._bar: tqdm | None = None

    def answer(
        self,
        fingerprint: str,
        keys: Sequence[str],
        args: Sequence[T],
        compute: Callable[[list[T]], list[Any]],
        *,
        commit: int,
        unit: Callable[[T], Hashable] | None = None,
        progress: bool = False,
    ) -> list[Any]:
        """The answers to ``args`` (cache keys ``keys``, under the model's ``fingerprint``).

        Args:
            compute: the model's answers to a list of arguments, in order (JSON-able values).
            commit: requests per rank per cache transaction: what a crash can cost at most.
            unit: requests with equal ``unit(arg)`` go to one rank in one ``compute`` call
                (default: each request on its own).
            progress: count the computed requests on this path's progress bar.

        A repeated key is computed once, at its last place: the keys left after a killed run
        are then exactly the tail of the first attempt's, so a rerun's chunks (and batches)
        are the ones an uninterrupted run computes.
        """
        self.shards.barrier()
        found = self.cache.get_many(fingerprint, keys) if self.cache is not None else {}
        self.asked += len(keys)
        self.cached += sum(key in found for key in keys)
        todo = sorted({key: i for i, key in enumerate(keys) if key not in found}.values())
        units = _units(todo, [args[i] for i in todo], unit)
        bar = self._progress(len(todo)) if progress else None
        chunks = _chunks(units, commit * self.shards.world_size)
        self._log_share(keys, chunks, len(todo))
        for chunk in chunks:
            answered = self.shards.map(
                chunk, lambda part: _split(compute([args[i] for u in part for i in u]), part)
            )
            fresh = {
                keys[i]: value
                for u, values in zip(chunk, answered, strict=True)
                for i, value in zip(u, values, strict=True)
            }
            if self.cache is not None and self.shards.is_writer:
                self.cache.put_many(fingerprint, fresh.items())
            found.update(fresh)
            if bar is not None:
                bar.update(sum(len(u) for u in chunk))
        return [found[key] for key in keys]

    def _log_share(self, keys: Sequence[str], chunks: list[list[list[int]]], todo: int) -> None:
        """Log which of the ``todo`` requests left this rank computes (nothing when none are)."""
        if not todo:
            return
        held = [i for chunk in chunks for j in self.shards.mine(len(chunk)) for i in chunk[j]]
        where = (
            f"#{held[0]} (key {keys[held[0]][:12]}) to #{held[-1]} (key {keys[held[-1]][:12]})"
            if held else "none"
        )
        log.info("%s: rank %d of %d holds %d of %d requests to compute: %s", self.label,
                 self.shards.rank, self.shards.world_size, len(held), todo, where)

    def _progress(self, more: int) -> tqdm:
        """One bar per path, however many calls it serves; it grows as requests arrive."""
        if self._bar is None:
            self._bar = tqdm(
                total=0, desc=self.label, unit="req", leave=False, disable=not self.shards.is_writer
            )
        self._bar.total += more
        self._bar.refresh()
        return self._bar

    def close(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()


def _units(
    todo: list[int], args: list[Any], unit: Callable[[Any], Hashable] | None
) -> list[list[int]]:
    """``todo`` grouped by ``unit`` of its argument, in order of first appearance."""
    if unit is None:
        return [[i] for i in todo]
    groups: dict[Hashable, list[int]] = {}
    for i, arg in zip(todo, args, strict=True):
        groups.setdefault(unit(arg), []).append(i)
    return list(groups.values())


def _chunks(units: list[list[int]], size: int) -> list[list[list[int]]]:
    """Consecutive runs of whole units holding about ``size`` requests each."""
    out: list[list[list[int]]] = [[]]
    held = 0
    for unit in units:
        if held >= size:
            out.append([])
            held = 0
        out[-1].append(unit)
        held += len(unit)
    return out if out[0] else []


def _split(values: list[Any], units: list[list[int]]) -> list[list[Any]]:
    """``values`` (flat, in ``units`` order) cut back into one list per unit."""
    out, at = [], 0
    for unit in units:
        out.append(values[at : at + len(unit)])
        at += len(unit)
    return out
