"""What this machine has free right now (no torch import: the CLI sizes thread pools with it)."""

from __future__ import annotations

import os


def free_cores() -> int:
    """Cores not busy with other processes: cpu count minus the 1-minute load, at least 1.

    Oversubscribing a busy core made training steps 13-23x slower on the project's 2-core machine.
    """
    total = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(total, total - busy))
