"""The request path: order, counts, units, commits, writer-only write-back, resumed line-up."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iaa_eval.runner.cache import RequestCache, request_key
from iaa_eval.runner.distributed import Shards
from iaa_eval.runner.requests import RequestPath
from tests.runner.test_distributed import _Rank1

log = logging.getLogger(__name__)


class Model:
    """Answers ``(context, option)`` with a string of both; records each call; can die mid-run."""

    def __init__(self, die_after: int | None = None) -> None:
        self.calls: list[list[tuple[str, str]]] = []
        self.die_after = die_after

    def __call__(self, args: list[tuple[str, str]]) -> list[str]:
        if self.die_after is not None and len(self.calls) == self.die_after:
            raise KeyboardInterrupt
        self.calls.append(list(args))
        return [f"{c}|{o}" for c, o in args]


def _requests(seed: int) -> list[tuple[str, str]]:
    """Contexts with 1-5 options each, some requests repeated."""
    rng = random.Random(seed)
    args = [
        (f"ctx{c}", f"opt{o}") for c in range(rng.randint(20, 40)) for o in range(rng.randint(1, 5))
    ]
    args += rng.sample(args, 5)
    return args


def _ask(path: RequestPath, args: list[tuple[str, str]], model: Callable, commit: int) -> list[Any]:
    keys = [request_key(list(a)) for a in args]
    return path.answer("fp", keys, args, model, commit=commit, unit=lambda a: a[0])


def test_answers_counts_units_and_commits(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    log.info("seed %d", seed)
    args, commit = _requests(seed), random.Random(seed).randint(3, 9)
    cache = RequestCache(tmp_path / "cache.sqlite")
    path, model = RequestPath(cache), Model()
    assert _ask(path, args, model, commit) == [f"{c}|{o}" for c, o in args]
    assert (path.asked, path.cached) == (len(args), 0)
    computed = [a for call in model.calls for a in call]
    assert sorted(computed) == sorted(set(args))  # a repeated request is computed once
    contexts = [c for call in model.calls for c in dict.fromkeys(c for c, _ in call)]
    assert len(contexts) == len(set(contexts))  # a context's options all go in one call
    assert all(len(call) < commit + 5 for call in model.calls)
    assert cache.count("fp") == len(set(args))
    again, idle = RequestPath(cache), Model()
    assert _ask(again, args, idle, commit) == [f"{c}|{o}" for c, o in args]
    assert (again.asked, again.cached, idle.calls) == (len(args), len(args), [])


def test_a_killed_run_resumes_on_the_same_chunks(tmp_path: Path) -> None:
    """Chunks after an interruption are exactly the uninterrupted run's remaining chunks."""
    seed = random.randrange(1 << 30)
    log.info("seed %d", seed)
    args = _requests(seed)
    whole = Model()
    _ask(RequestPath(RequestCache(tmp_path / "whole.sqlite")), args, whole, 4)
    assert len(whole.calls) > 3
    cache = RequestCache(tmp_path / "killed.sqlite")
    with pytest.raises(KeyboardInterrupt):
        _ask(RequestPath(cache), args, Model(die_after=2), 4)
    rest = Model()
    resumed = RequestPath(cache)
    _ask(resumed, args, rest, 4)
    assert rest.calls == whole.calls[2:]
    stored = {a for call in whole.calls[:2] for a in call}
    assert resumed.cached == sum(a in stored for a in args)



def test_only_the_writer_stores_and_chunks_grow_with_the_ranks(tmp_path: Path) -> None:
    args = [(f"q{i}", "") for i in range(10)]
    cache = RequestCache(tmp_path / "cache.sqlite")
    model = Model()
    keys = [request_key(list(a)) for a in args]
    path = RequestPath(cache, _Rank1())
    assert path.answer("fp", keys, args, model, commit=2) == [f"q{i}|" for i in range(10)]
    assert cache.count() == 0
    assert [len(call) for call in model.calls] == [4, 4, 2]  # commit x world size per chunk


def test_each_rank_logs_the_requests_it_holds(caplog: pytest.LogCaptureFixture) -> None:
    seed = random.randrange(1 << 30)
    log.warning("seed=%d", seed)
    args = _requests(seed)
    keys = [request_key(list(a)) for a in args]
    todo = len(set(keys))
    caplog.set_level(logging.INFO, logger="iaa_eval.runner.requests")
    shares = []
    for shards in (Shards(), _Rank1(rank=0), _Rank1()):
        caplog.clear()
        path = RequestPath(None, shards, "mmlu")
        path.answer("fp", keys, args, Model(), commit=3, unit=lambda a: a[0])
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.startswith(f"mmlu: rank {shards.rank} of {shards.world_size} holds ")
        assert f" of {todo} requests to compute: #" in line
        shares.append(int(line.split(" holds ")[1].split(" ")[0]))
    assert shares[0] == todo  # alone: everything
    assert shares[1] + shares[2] == todo and 0 < shares[1] and 0 < shares[2]  # two ranks: disjoint
