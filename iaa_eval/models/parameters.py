"""Parameter accounting: what a served model weighs, and what IAA adds to its base.

One counting rule for every number: each distinct tensor once (tied embeddings, LLaVA's text view
sharing its language model, IAA's frozen base inside the IAA model). Tensors on the meta device
(shape-only models, e.g. the 8B arithmetic) count by identity, the others by storage.

- :func:`parameter_summary` gives results.json ``models[name]["parameters"]``, which the report's
  deployment-cost table reads (``total``/``bytes``: every tensor the adapter serves with;
  ``text``/``text_bytes``: its text view alone);
- :func:`parameter_counts` splits an IAA model into base / vision tower / added weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from iaa_eval.models.base import EvalModel
    from iaa_eval.models.iaa.modeling import IAAForCausalLM


@dataclass(frozen=True)
class Tally:
    """Distinct parameters of a module, and the bytes of its distinct parameters and buffers."""

    parameters: int
    bytes: int


def tally(module: torch.nn.Module, trainable_only: bool = False) -> Tally:
    """Count ``module``'s distinct tensors; ``trainable_only``: parameters that require grad (and
    no buffers)."""
    seen: set[int] = set()
    count = size = 0
    buffers = [] if trainable_only else list(module.buffers())
    for tensor in [*module.parameters(), *buffers]:
        if trainable_only and not tensor.requires_grad:
            continue
        key = id(tensor) if tensor.device.type == "meta" else tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        if isinstance(tensor, torch.nn.Parameter):
            count += tensor.numel()
        size += tensor.numel() * tensor.element_size()
    return Tally(count, size)


def parameter_summary(model: EvalModel) -> dict[str, Any]:
    """Counts for results.json ``models[name]["parameters"]``."""
    text_module = model.text_view().model
    full = tally(getattr(model, "model", text_module))
    text = tally(text_module)
    return {"total": full.parameters, "bytes": full.bytes,
            "text": text.parameters, "text_bytes": text.bytes}


@dataclass(frozen=True)
class ParameterCounts:
    """base: the frozen LM; vision: the tower; added: branches + projectors; trainable: what
    requires grad now."""

    base: int
    vision: int
    added: int
    trainable: int

    @property
    def total(self) -> int:
        return self.base + self.vision + self.added


def parameter_counts(model: IAAForCausalLM) -> ParameterCounts:
    """Split an IAA model's parameters into base / vision / added, plus the trainable count."""
    base = tally(model.base_lm).parameters
    vision = tally(model.model.vision_tower).parameters
    total = tally(model).parameters
    return ParameterCounts(base=base, vision=vision, added=total - base - vision,
                           trainable=tally(model, trainable_only=True).parameters)
