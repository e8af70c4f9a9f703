"""Parameter accounting: what IAA adds to its base, what it trains, and what serving costs.

The deployment argument of IAA: one model serves text (the untouched base) and images, where the
LLaVA route needs the base *and* a fine-tuned copy of it. Counts are exact (shared tensors are
counted once); bytes are parameter bytes at a given width (2 for bf16/fp16), without KV caches.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from iaa_eval.models.iaa.modeling import IAAForCausalLM


def count(module: nn.Module, trainable_only: bool = False) -> int:
    """Distinct parameters of ``module`` (shared tensors once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class ParameterCounts:
    """base: the frozen LM; vision: the tower; added: branches + projectors; trainable: requires_grad now."""

    base: int
    vision: int
    added: int
    trainable: int

    @property
    def total(self) -> int:
        return self.base + self.vision + self.added


def parameter_counts(model: IAAForCausalLM) -> ParameterCounts:
    """Split an IAA model's parameters into base / vision / added, plus the trainable count."""
    base, vision, total = count(model.base_lm), count(model.model.vision_tower), count(model)
    return ParameterCounts(base=base, vision=vision, added=total - base - vision, trainable=count(model, True))


@dataclass(frozen=True)
class ServingCost:
    """Parameter bytes to serve text + images: one IAA model vs the base LM plus a LLaVA-style model."""

    iaa_bytes: int
    base_plus_llava_bytes: int

    @property
    def saved_bytes(self) -> int:
        return self.base_plus_llava_bytes - self.iaa_bytes

    @property
    def ratio(self) -> float:
        """IAA's bytes as a fraction of base + LLaVA."""
        return self.iaa_bytes / self.base_plus_llava_bytes


def serving_cost(model: IAAForCausalLM, llava: nn.Module | None = None, bytes_per_param: int = 2) -> ServingCost:
    """Bytes of ``model`` vs base + ``llava``; without ``llava``, a LLaVA-1.5 of the same base, tower
    and projector shape is assumed (its LLM is a full fine-tuned copy of the base)."""
    counts = parameter_counts(model)
    if llava is not None:
        llava_params = count(llava)
    else:
        llava_params = counts.base + counts.vision + count(model.model.mm_projector)
    return ServingCost(iaa_bytes=counts.total * bytes_per_param,
                       base_plus_llava_bytes=(counts.base + llava_params) * bytes_per_param)
