"""free_cores: never zero, never more than the machine has, lower when the machine is busy."""

from __future__ import annotations

import os

import pytest

from iaa_eval import machine


def test_free_cores_within_bounds() -> None:
    assert 1 <= machine.free_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize(("load", "expected"), [(0.0, 8), (2.4, 6), (7.6, 1), (30.0, 1)])
def test_free_cores_subtracts_the_load(monkeypatch: pytest.MonkeyPatch, load: float, expected: int) -> None:
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (load, load, load))
    assert machine.free_cores() == expected
