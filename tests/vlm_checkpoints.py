"""Tiny random checkpoints of every bridge-style VLM family, built locally (nothing from the hub).

Each family: a 2-layer text model of width 32, a 2-layer vision tower on 32 px images, the
byte-level test tokenizer with the family's image tokens, the family's slow (PIL) image processor
and a chat template; saved with ``save_pretrained`` so the adapter loads them as it would a hub
download.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import build_tokenizer

# A ChatML-style template that understands image parts (Qwen-VL, InternVL, ...): ``image``
# renders as the family's placeholder, passed in as ``{image}``.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{image}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)

TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=512,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
    tie_word_embeddings=False,
)
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}
GRID = [[32, 32], [32, 64], [64, 32], [64, 64]]


@dataclass(frozen=True)
class Family:
    """How to build one family's tiny checkpoint.

    Args:
        model_type: the config's ``model_type``.
        tokens: the family's special tokens, by the tokenizer attribute its processor reads.
        config: ``(token ids by token) -> kwargs`` for ``AutoConfig.for_model``.
        image_processor: builds the slow (PIL) image processor.
        placeholder: what an image part renders to in the chat template.
        processor_config: the processor's own settings (``processor_config.json``).
    """

    model_type: str
    tokens: dict[str, str]
    config: Callable[[dict[str, int]], dict[str, Any]]
    image_processor: Callable[[], Any]
    placeholder: str
    processor_config: dict[str, Any] = field(default_factory=dict)


def _llava(ids: dict[str, int]) -> dict[str, Any]:
    return dict(
        text_config=dict(model_type="llama", **TEXT),
        vision_config=dict(model_type="clip_vision_model", **VISION),
        image_token_id=ids["<image>"],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=16,
    )


def _llava_next(ids: dict[str, int]) -> dict[str, Any]:
    return {**_llava(ids), "image_grid_pinpoints": GRID}


def _onevision(ids: dict[str, int]) -> dict[str, Any]:
    return dict(
        text_config=dict(model_type="qwen2", **TEXT),
        vision_config=dict(model_type="siglip_vision_model", **VISION),
        image_token_id=ids["<image>"],
        video_token_id=ids["<video>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=GRID,
        vision_aspect_ratio="anyres_max_9",
    )


def _qwen_ids(ids: dict[str, int]) -> dict[str, int]:
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _qwen2_vl(ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        depth=2, embed_dim=32, hidden_size=32, num_heads=4, patch_size=8, spatial_merge_size=2
    )
    return dict(
        text_config=dict(**TEXT, rope_parameters=MROPE), vision_config=vision, **_qwen_ids(ids)
    )


def _qwen2_5_vl(ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        patch_size=8,
        spatial_merge_size=2,
        out_hidden_size=32,
        window_size=32,
        fullatt_block_indexes=[1],
    )
    return dict(
        text_config=dict(**TEXT, rope_parameters=MROPE), vision_config=vision, **_qwen_ids(ids)
    )


def _qwen3_vl(ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        patch_size=8,
        spatial_merge_size=2,
        out_hidden_size=32,
        num_position_embeddings=16,
        deepstack_visual_indexes=[0],
    )
    rope = {**MROPE, "mrope_interleaved": True}
    return dict(
        text_config=dict(**TEXT, rope_parameters=rope), vision_config=vision, **_qwen_ids(ids)
    )


def _idefics3(ids: dict[str, int]) -> dict[str, Any]:
    vision = {k: v for k, v in VISION.items()}
    return dict(
        text_config=dict(model_type="llama", **TEXT),
        vision_config=vision,
        image_token_id=ids["<image>"],
        scale_factor=2,
    )


def _gemma3(ids: dict[str, int]) -> dict[str, Any]:
    text = dict(
        **TEXT,
        query_pre_attn_scalar=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )
    return dict(
        text_config=text,
        vision_config=dict(model_type="siglip_vision_model", **VISION),
        mm_tokens_per_image=4,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )


def _mistral3(ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        head_dim=8,
        image_size=64,
        patch_size=8,
    )
    return dict(
        text_config=dict(model_type="mistral", **TEXT),
        vision_config=vision,
        image_token_index=ids["[IMG]"],
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )


def _internvl(ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=[32, 32],
        patch_size=[8, 8],
    )
    return dict(
        text_config=dict(model_type="qwen2", **TEXT),
        vision_config=vision,
        image_token_id=ids["<IMG_CONTEXT>"],
        downsample_ratio=0.5,
        image_seq_length=4,
    )


def _deepseek_vl(ids: dict[str, int]) -> dict[str, Any]:
    return dict(
        text_config=dict(model_type="llama", **TEXT),
        vision_config=dict(model_type="siglip_vision_model", **VISION),
        image_token_id=ids["<image_placeholder>"],
    )


def _pil(name: str, **kwargs: Any) -> Callable[[], Any]:
    def build() -> Any:
        import transformers

        return getattr(transformers, name)(**kwargs)

    return build


_CLIP = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
_QWEN_IMAGES = dict(patch_size=8, merge_size=2, min_pixels=16 * 16, max_pixels=64 * 64)

_LLAVA_TOKENS = {"image_token": "<image>"}
_QWEN_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
_QWEN_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
_IDEFICS_TOKENS = {
    "image_token": "<image>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
_IDEFICS_IMAGES = dict(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
_LLAVA_PROCESSOR = dict(
    patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1
)

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in [
        Family(
            "llava",
            _LLAVA_TOKENS,
            _llava,
            _pil("CLIPImageProcessorPil", **_CLIP),
            "<image>",
            _LLAVA_PROCESSOR,
        ),
        Family(
            "llava_next",
            _LLAVA_TOKENS,
            _llava_next,
            _pil("LlavaNextImageProcessorPil", **_CLIP, image_grid_pinpoints=GRID),
            "<image>",
            _LLAVA_PROCESSOR,
        ),
        Family(
            "llava_onevision",
            {"image_token": "<image>", "video_token": "<video>"},
            _onevision,
            _pil(
                "LlavaOnevisionImageProcessorPil",
                size={"height": 32, "width": 32},
                image_grid_pinpoints=GRID,
            ),
            "<image>",
            dict(num_image_tokens=16, vision_feature_select_strategy="full"),
        ),
        Family(
            "qwen2_vl",
            _QWEN_TOKENS,
            _qwen2_vl,
            _pil("Qwen2VLImageProcessorPil", **_QWEN_IMAGES),
            _QWEN_PLACEHOLDER,
        ),
        Family(
            "qwen2_5_vl",
            _QWEN_TOKENS,
            _qwen2_5_vl,
            _pil("Qwen2VLImageProcessorPil", **_QWEN_IMAGES),
            _QWEN_PLACEHOLDER,
        ),
        Family(
            "qwen3_vl",
            _QWEN_TOKENS,
            _qwen3_vl,
            _pil("Qwen2VLImageProcessorPil", **_QWEN_IMAGES),
            _QWEN_PLACEHOLDER,
        ),
        Family(
            "idefics3",
            _IDEFICS_TOKENS,
            _idefics3,
            _pil("Idefics3ImageProcessorPil", **_IDEFICS_IMAGES),
            "<image>",
            dict(image_seq_len=4),
        ),
        Family(
            "smolvlm",
            _IDEFICS_TOKENS,
            _idefics3,
            _pil("SmolVLMImageProcessorPil", **_IDEFICS_IMAGES),
            "<image>",
            dict(image_seq_len=4),
        ),
        Family(
            "gemma3",
            {
                "image_token": "<image_soft_token>",
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
            },
            _gemma3,
            _pil("Gemma3ImageProcessorPil", size={"height": 32, "width": 32}),
            "<start_of_image>",
            dict(image_seq_length=4),
        ),
        Family(
            "mistral3",
            {
                "image_token": "[IMG]",
                "image_break_token": "[IMG_BREAK]",
                "image_end_token": "[IMG_END]",
            },
            _mistral3,
            _pil("PixtralImageProcessorPil", size={"longest_edge": 64}, patch_size=8),
            "[IMG]",
            dict(patch_size=8, spatial_merge_size=2),
        ),
        Family(
            "internvl",
            {
                "context_image_token": "<IMG_CONTEXT>",
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "video_token": "<video>",
            },
            _internvl,
            _pil(
                "GotOcr2ImageProcessorPil", size={"height": 32, "width": 32}, crop_to_patches=False
            ),
            "<IMG_CONTEXT>",
            dict(image_seq_length=4),
        ),
        Family(
            "deepseek_vl",
            {"image_token": "<image_placeholder>"},
            _deepseek_vl,
            _pil("DeepseekVLImageProcessorPil", size={"height": 32, "width": 32}),
            "<image_placeholder>",
            dict(num_image_tokens=16),
        ),
    ]
}


def generation_blocker(model_type: str) -> str | None:
    """Why this machine cannot build the family's processor (a test skip, not a pass)."""
    if model_type == "smolvlm" and importlib.util.find_spec("num2words") is None:
        return "SmolVLMProcessor needs the num2words package"
    return None


def family_tokenizer(model_type: str) -> Any:
    """The test tokenizer with the family's special tokens, each also an attribute
    (``tokenizer.image_token``), as the family's hub tokenizers have them."""
    from transformers import PreTrainedTokenizerFast

    tokens = FAMILIES[model_type].tokens
    base = build_tokenizer(extra_special=list(tokens.values()))
    return PreTrainedTokenizerFast(
        tokenizer_object=base._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens=dict(tokens),
    )


def build_model(model_type: str, seed: int = 0) -> tuple[Any, Any]:
    """A random tiny model of the family and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    family = FAMILIES[model_type]
    tokenizer = family_tokenizer(model_type)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.tokens.values()}
    kwargs = family.config(ids)
    kwargs["text_config"] = {**kwargs["text_config"], "vocab_size": len(tokenizer)}
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    return model, tokenizer


def save_family(model_type: str, path: Path, seed: int = 0) -> Path:
    """A random tiny checkpoint of a family (model, tokenizer, image processor, template)."""
    family = FAMILIES[model_type]
    model, tokenizer = build_model(model_type, seed)
    model.save_pretrained(path)
    tokenizer.chat_template = _CHAT_TEMPLATE.replace("{image}", family.placeholder)
    tokenizer.save_pretrained(path)
    family.image_processor().save_pretrained(path)
    if (
        family.processor_config
    ):  # what ProcessorMixin.save_pretrained writes; the processor may need torchvision
        (path / "processor_config.json").write_text(json.dumps(family.processor_config))
    return path
