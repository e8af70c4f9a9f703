"""Parameter and byte counts of a loaded model, for the deployment-cost table.

``total``/``bytes`` cover every distinct tensor the adapter serves with (shared tensors once);
``text``/``text_bytes`` cover its text view alone.
"""

from __future__ import annotations

from typing import Any

import torch

from iaa_eval.models.base import EvalModel


def _count(module: torch.nn.Module) -> tuple[int, int]:
    seen: set[int] = set()
    count = size = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type == "meta" or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        if isinstance(tensor, torch.nn.Parameter):
            count += tensor.numel()
        size += tensor.numel() * tensor.element_size()
    return count, size


def parameter_summary(model: EvalModel) -> dict[str, Any]:
    """Counts for results.json ``models[name]["parameters"]``."""
    text_module = model.text_view().model
    full_module = getattr(model, "model", text_module)
    total, total_bytes = _count(full_module)
    text, text_bytes = _count(text_module)
    return {"total": total, "bytes": total_bytes, "text": text, "text_bytes": text_bytes}
