"""The generic registry: lazy entries, duplicates refused, helpful misses."""

from __future__ import annotations

import pytest

from iaa_eval.errors import UsageError
from iaa_eval.registry import Registry


def test_lazy_entry_resolves_on_first_use() -> None:
    reg: Registry = Registry("thing")
    reg.add("join", "os.path:join")
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.names() == ["join"] and "join" in reg


def test_duplicate_name_with_other_target_is_refused() -> None:
    reg: Registry = Registry("thing")
    reg.add("a", "x:y")
    reg.add("a", "x:y")
    with pytest.raises(ValueError, match="already registered to 'x:y'"):
        reg.add("a", "x:z")


def test_unknown_name_suggests_close_matches() -> None:
    reg: Registry = Registry("task")

    @reg.register("mmbench_en")
    def _f() -> None: ...

    with pytest.raises(UsageError, match="unknown task 'mmbench_e'. Did you mean: mmbench_en") as exc:
        reg.get("mmbench_e")
    assert "Available: mmbench_en" in str(exc.value)
