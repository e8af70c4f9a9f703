"""``IAAConfig``: every architectural choice of an IAA model, validated when the config is built.

The base LM's own config is kept whole as ``text_config`` (so the frozen LM can be rebuilt exactly
as ``AutoModelForCausalLM`` would build it), the vision tower's as ``vision_config``. Insertion
positions are 0-based indices of the base layers *after which* an insertion layer runs.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The only released list (official `ehce_layers`): pairs of adjacent layers every 5 layers.
IAA14_POSITIONS = (0, 1, 5, 6, 10, 11, 15, 16, 20, 21, 25, 26, 30, 31)
INSERTION_PRESETS: dict[str, tuple[int, ...]] = {"iaa-14": IAA14_POSITIONS}
#: what the model consumes at each image's position (official IMAGE_TOKEN_INDEX)
IMAGE_PLACEHOLDER_ID = -200
SUPPORTED_BASES = ("llama", "mistral", "qwen2")
SUPPORTED_WORKFLOWS = ("mm", "g")
PROJECTOR_TYPES = ("mlp2x_gelu", "linear")
FEATURE_SELECTS = ("patch", "cls_patch")


class IAAConfig(PreTrainedConfig):
    """Config of :class:`IAAForCausalLM`.

    Args:
        text_config: the frozen base LM's config (Llama, Mistral or Qwen2 family).
        vision_config: the CLIP vision tower's config.
        insert_after_layers: sorted, distinct base-layer indices, or a preset name (``"iaa-14"``).
            The IAA-8 list is not published; pass it as a custom list when known.
        workflows: the trained branches besides ``text``: ``("mm",)`` or ``("mm", "g")``.
        mm_hidden_size: width of the vision features (defaults to ``vision_config.hidden_size``).
        projector_type: ``mlp2x_gelu`` (Linear, exact GELU, Linear) or ``linear``.
        vision_feature_layer: which CLIP hidden state feeds the projector (-2 = second to last).
        vision_feature_select: ``patch`` drops the CLS token, ``cls_patch`` keeps it.
        image_token_id: id of the tokenizer's image placeholder token (Llama-3: 128049); the
            adapter replaces it by -200 before the model sees the ids.
        vision_tower_path: where the tower (and its image processor) was loaded from, if anywhere.
    """

    model_type = "iaa_eval"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    insert_after_layers: list[int] | tuple[int, ...] | str = "iaa-14"
    workflows: list[str] | tuple[str, ...] = ("mm",)
    mm_hidden_size: int | None = None
    projector_type: str = "mlp2x_gelu"
    vision_feature_layer: int = -2
    vision_feature_select: str = "patch"
    image_token_id: int | None = None
    image_aspect_ratio: str = "pad"
    vision_tower_path: str | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        # An empty mapping keeps each sub-config's attention backend: a plain None would reset the
        # wrapped base LM's own config (shared by reference) and silently change its kernels.
        kwargs.setdefault("attn_implementation", {})
        super().__post_init__(**kwargs)
        self.insert_after_layers = resolve_positions(self.insert_after_layers,
                                                     self.text_config.num_hidden_layers)
        self.workflows = list(self.workflows)
        if self.mm_hidden_size is None:
            self.mm_hidden_size = self.vision_config.hidden_size
        self._validate()

    def get_text_config(self, decoder: bool | None = None,
                        encoder: bool | None = None) -> PreTrainedConfig:
        """``decoder=True`` (what transformers sizes KV caches from): the base's config with one
        more layer per insertion layer, whose K/V sit after the base's in the same cache."""
        text = super().get_text_config(decoder=decoder, encoder=encoder)
        if not decoder:
            return text
        kv = copy.copy(text)
        kv.num_hidden_layers = text.num_hidden_layers + len(self.insert_after_layers)
        if getattr(text, "layer_types", None):
            added = len(self.insert_after_layers)
            kv.layer_types = [*text.layer_types, *["full_attention"] * added]
        return kv

    def _validate(self) -> None:
        """Each rule raises ``ValueError`` naming the field, the value and the rule."""
        base_type = self.text_config.model_type
        if base_type not in SUPPORTED_BASES:
            raise ValueError(
                f"text_config.model_type={base_type!r} is not a base IAA can wrap; supported: "
                f"{', '.join(SUPPORTED_BASES)}"
            )
        if getattr(self.text_config, "sliding_window", None) and (
            base_type == "mistral" or getattr(self.text_config, "use_sliding_window", False)
        ):
            raise ValueError(
                f"text_config.sliding_window={self.text_config.sliding_window}: sliding-window "
                "attention is not supported by the insertion-layer cache; use a base with full "
                "attention"
            )
        bad = [w for w in self.workflows if w not in SUPPORTED_WORKFLOWS]
        if bad or "mm" not in self.workflows or len(set(self.workflows)) != len(self.workflows):
            raise ValueError(f"workflows={self.workflows!r}: expected ['mm'] or ['mm', 'g']")
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type={self.projector_type!r}: expected one of "
                             f"{', '.join(PROJECTOR_TYPES)}")
        if self.vision_feature_select not in FEATURE_SELECTS:
            raise ValueError(
                f"vision_feature_select={self.vision_feature_select!r}: expected one of "
                f"{', '.join(FEATURE_SELECTS)}"
            )
        if self.mm_hidden_size != self.vision_config.hidden_size:
            raise ValueError(
                f"mm_hidden_size={self.mm_hidden_size} does not match vision_config.hidden_size="
                f"{self.vision_config.hidden_size}: the projector's input must be the vision "
                "tower's width"
            )
        if self.image_aspect_ratio not in ("pad", "none"):
            raise ValueError(f"image_aspect_ratio={self.image_aspect_ratio!r}: "
                             "expected 'pad' or 'none'")


def resolve_positions(value: list[int] | tuple[int, ...] | str, num_layers: int) -> list[int]:
    """A preset name or a list -> a validated list of insertion positions for ``num_layers`` base
    layers."""
    if isinstance(value, str):
        if value.lower() == "iaa-8":
            raise ValueError(
                "insert_after_layers='iaa-8': the IAA-8 layer list is not published (paper body "
                "unavailable); pass the list explicitly, e.g. insert_after_layers=[...]"
            )
        if value.lower() not in INSERTION_PRESETS:
            raise ValueError(
                f"insert_after_layers={value!r}: unknown preset; known: "
                f"{', '.join(INSERTION_PRESETS)}, or pass a list"
            )
        value = INSERTION_PRESETS[value.lower()]
    positions = [int(p) for p in value]
    for index, position in enumerate(positions):
        if not 0 <= position < num_layers:
            raise ValueError(
                f"insert_after_layers[{index}]={position} is out of range for "
                f"num_hidden_layers={num_layers}"
            )
        if index and position <= positions[index - 1]:
            raise ValueError(
                f"insert_after_layers[{index}]={position} must be greater than "
                f"insert_after_layers[{index - 1}]="
                f"{positions[index - 1]}: positions are sorted and distinct"
            )
    return positions
