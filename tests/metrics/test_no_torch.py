"""The metrics package stays importable without torch (reports and the gate use it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_metrics_do_not_import_torch() -> None:
    code = (
        "import sys; import iaa_eval.metrics.vqa, iaa_eval.metrics.mme, iaa_eval.metrics.mmbench; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
