"""The bridge-style VLM families the ``vlm`` kind runs, and how each one's processor is built.

Bridge-style: a vision encoder whose features are projected into the token stream of an ordinary
causal LM (the IAA paper's term), so the LM alone is a text model whose forgetting can be measured.
Each family runs through ``AutoModelForImageTextToText`` and its own processor
(:mod:`~iaa_eval.models.vlm_processor`); what differs is recorded here, not in the adapter. This
module imports nothing heavy: ``iaa-eval tasks`` lists the families from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from iaa_eval.errors import ModelError


@dataclass(frozen=True)
class VLMFamily:
    """One family.

    Args:
        model_type: the checkpoint config's ``model_type``.
        label: the family's name for listings.
        image_features: why reusing one image's projected features or prompt prefix across questions
            would not give the same answers (``None``: it does).
        system_prompt: ask with LLaVA's system prompt (as LLaVA-1.5 trained and is evaluated);
            other families get their chat template's own default.
    """

    model_type: str
    label: str
    image_features: str | None = None
    system_prompt: bool = False


_POSITIONS = (
    "M-RoPE positions of the image tokens depend on the image's grid, which the prefix cache of "
)
_FAMILIES = (
    VLMFamily("llava", "LLaVA-1.5 (llava-hf)", system_prompt=True),
    VLMFamily(
        "llava_next",
        "LLaVA-NeXT (anyres)",
        "anyres images are tiled per image size: features are a list of variable-length tiles",
    ),
    VLMFamily(
        "llava_onevision",
        "LLaVA-OneVision",
        "anyres images are tiled per image size: features are a list of variable-length tiles",
    ),
    VLMFamily("qwen2_vl", "Qwen2-VL", _POSITIONS + "generate does not carry"),
    VLMFamily("qwen2_5_vl", "Qwen2.5-VL", _POSITIONS + "generate does not carry"),
    VLMFamily(
        "qwen3_vl",
        "Qwen3-VL",
        _POSITIONS + "generate does not carry; deepstack features enter inner layers",
    ),
    VLMFamily("idefics3", "Idefics3", "images are split into a per-size number of crops"),
    VLMFamily("smolvlm", "SmolVLM", "images are split into a per-size number of crops"),
    VLMFamily(
        "gemma3",
        "Gemma 3",
        "image tokens attend to each other bidirectionally: a cached causal prefix "
        "is not what the model computes",
    ),
    VLMFamily(
        "mistral3",
        "Mistral 3 (Pixtral vision)",
        "images keep their aspect ratio: feature length varies",
    ),
    VLMFamily(
        "internvl", "InternVL", "the processor may tile images into a per-size number of crops"
    ),
    VLMFamily("deepseek_vl", "DeepSeek-VL"),
)
FAMILIES: dict[str, VLMFamily] = {f.model_type: f for f in _FAMILIES}


def supported_families() -> str:
    """One line per family: ``model_type  label`` (for ``iaa-eval tasks``)."""
    return "\n".join(f"  {f.model_type:<16} {f.label}" for f in _FAMILIES)


def require_family(model_type: str, path: str) -> VLMFamily:
    """The family of a checkpoint, or a one-line refusal listing the supported ones."""
    if model_type not in FAMILIES:
        raise ModelError(
            f"vlm {path!r}: model_type {model_type!r} is not a supported VLM family; supported: "
            f"{', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]
