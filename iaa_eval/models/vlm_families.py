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
        no_feature_cache: why each image's encoded features cannot be cached and handed back to the
            model (``mm_encoder_outputs``) with the same answers; ``""``: they can (tested).
        no_shared_prefix: why the questions of one image cannot share their prompt's head (run
            once, its K/V copied to each question) with the same answers; ``""``: they can, the
            head's K/V depending only on its tokens and image (tested).
        no_batched_encode: why the images a batch lacks in the feature cache cannot be encoded in
            one ``get_image_features`` call and split back per image with the features of
            one-image calls; ``""``: they can (tested).
        system_prompt: ask with LLaVA's system prompt (as LLaVA-1.5 trained and is evaluated);
            other families get their chat template's own default.
    """

    model_type: str
    label: str
    no_feature_cache: str = ""
    no_shared_prefix: str = ""
    no_batched_encode: str = ""
    system_prompt: bool = False


_MROPE = (
    "M-RoPE: the positions of a question's own tokens are offset by its image grid (rope_deltas), "
    "which the model keeps from the forward that saw the image, not with a copied cache"
)
_FAMILIES = (
    VLMFamily("llava", "LLaVA-1.5 (llava-hf)", system_prompt=True),
    VLMFamily("llava_next", "LLaVA-NeXT (anyres)"),
    VLMFamily("llava_onevision", "LLaVA-OneVision"),
    VLMFamily("qwen2_vl", "Qwen2-VL", no_shared_prefix=_MROPE),
    VLMFamily("qwen2_5_vl", "Qwen2.5-VL", no_shared_prefix=_MROPE),
    VLMFamily(
        "qwen3_vl",
        "Qwen3-VL",
        "deepstack: features of inner vision layers enter inner LM layers, and mm_encoder_outputs "
        "carries only the final ones",
        _MROPE,
    ),
    VLMFamily("idefics3", "Idefics3"),
    VLMFamily(
        "smolvlm",
        "SmolVLM",
        no_batched_encode="a call whose crops are all blank (every value 0.0, taken for padding) "
        "keeps one of them, so a blank image's features would depend on the images encoded with "
        "it",
    ),
    VLMFamily(
        "gemma3",
        "Gemma 3",
        no_shared_prefix="an image's tokens attend to each other both ways (token_type_ids), and "
        "sliding-window layers would count the padding between the shared head and a question's "
        "own tokens as positions",
    ),
    VLMFamily("mistral3", "Mistral 3 (Pixtral vision)"),
    VLMFamily("internvl", "InternVL"),
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
