"""Model adapters, one module per family, registered lazily by kind name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iaa_eval.registry import Registry

if TYPE_CHECKING:
    from iaa_eval.models.base import EvalModel, ModelSpec

MODEL_KINDS: Registry = Registry("model kind")
MODEL_KINDS.add("hf", "iaa_eval.models.hf_causal:HFCausalModel")
MODEL_KINDS.add("llava", "iaa_eval.models.vlm:VLMModel")  # the kind's name before vlm
MODEL_KINDS.add("vlm", "iaa_eval.models.vlm:VLMModel")
MODEL_KINDS.add("iaa", "iaa_eval.models.iaa.adapter:IAAModel")


def load_model(spec: ModelSpec) -> EvalModel:
    """Build the adapter that ``spec.kind`` names."""
    return MODEL_KINDS.get(spec.kind)(spec)
