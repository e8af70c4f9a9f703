"""Checkpoint layouts: ours and the official one (``qihoo360/Inner-Adaptor-Architecture``).

Module names already match the official keys, so the tensor key map is the identity apart from
the vision tower, which the official layout keeps *beside* the checkpoint (``mm_vision_tower``,
a relative path resolving against the checkpoint folder) and self-trained checkpoints keep
*inside* (``model.vision_tower.vision_tower.*``). What needs mapping is the config: the official
one is a flat ``LlamaConfig`` plus ``mm_*`` fields and has no insertion positions (the code
hard-codes IAA-14, which is what we assume when the field is absent). Every tensor is shape-checked;
missing and unexpected keys are listed. Weights are read through safetensors, or
``torch.load(weights_only=True)`` for ``.bin`` files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, CLIPImageProcessor, CLIPVisionModel, LlamaConfig

from iaa_eval.errors import ModelError
from iaa_eval.models.iaa.configuration import IAA14_POSITIONS, IAAConfig
from iaa_eval.models.loading import check_loading_info, load_pretrained, refuse_unmatched
from iaa_eval.models.vision import pil_image_processor

log = logging.getLogger(__name__)

OFFICIAL_MODEL_TYPE = "IAA"
VISION_PREFIX = "model.vision_tower.vision_tower."
#: the G (grounding) branch's insertion layers: present only in a checkpoint with that workflow
GROUNDING_PREFIX = "model.condition_layers_grounding."
LLAMA3_IMAGE_TOKEN_ID = 128049  # <|reserved_special_token_44|>, the official image token
_OFFICIAL_MM_FIELDS = {
    "mm_vision_tower", "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer",
    "mm_vision_select_feature", "mm_use_im_start_end", "mm_use_im_patch_token",
    "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "use_mm_proj", "image_aspect_ratio",
    "image_grid_pinpoints", "mm_num_tokens", "mm_projector_lr", "mm_projector_config",
    "auto_map", "architectures", "model_type", "transformers_version", "_name_or_path",
    "insert_after_layers", "image_token_id",  # our extensions; absent from official configs
}


def from_checkpoint_key(key: str) -> str:
    """Checkpoint key -> module key: transformers 5 dropped CLIPVisionModel's ``vision_model.``
    level."""
    official = VISION_PREFIX + "vision_model."
    return VISION_PREFIX + key[len(official):] if key.startswith(official) else key


def to_checkpoint_key(key: str) -> str:
    """Module key -> official checkpoint key (the inverse of :func:`from_checkpoint_key`)."""
    if not key.startswith(VISION_PREFIX):
        return key
    return VISION_PREFIX + "vision_model." + key[len(VISION_PREFIX):]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file, or a ModelError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read ({exc})") from exc


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder: one or sharded safetensors, else ``.bin``."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.exists():
            return sorted({folder / f for f in read_json(index)["weight_map"].values()})
    raise ModelError(f"{folder}: no model.safetensors, sharded safetensors or "
                     "pytorch_model.bin found")


def read_tensors(files: list[Path], keys_only: bool = False) -> dict[str, Any]:
    """Tensors by key (or ``None`` values with ``keys_only``) from safetensors or weights-only
    ``.bin``."""
    out: dict[str, Any] = {}
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                out.update({k: None if keys_only else handle.get_tensor(k) for k in handle.keys()})
        else:
            out.update(torch.load(file, map_location="cpu", weights_only=True))
    return out


def resolve_vision_dir(name: str | None, folder: Path) -> Path | None:
    """``mm_vision_tower``: relative names resolve against the checkpoint folder, then as given."""
    if not name:
        return None
    for candidate in (folder / name, Path(name).expanduser()):
        if candidate.is_dir():
            return candidate
    return None


def load_image_processor(folder: Path, vision_tower_path: str | None) -> Any:
    """A checkpoint's CLIP image processor (PIL-backed, as everywhere): in its folder (our
    layout) or its vision tower's (official)."""
    for candidate in (folder, resolve_vision_dir(vision_tower_path, folder)):
        if candidate is not None and (candidate / "preprocessor_config.json").exists():
            return pil_image_processor(
                CLIPImageProcessor.from_pretrained(candidate, trust_remote_code=False))
    raise ModelError(f"{folder}: no preprocessor_config.json here or in the vision-tower folder "
                     f"({vision_tower_path!r})")


# a whole CLIP checkpoint's parts that its vision tower does not use
CLIP_NON_VISION = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


def load_vision_tower(path: str, what: str, **kwargs: Any) -> CLIPVisionModel:
    """A CLIP vision tower from a folder holding it alone or a whole CLIP, refused (listing the
    weights) where it would run with a weight the folder does not hold."""
    model, info = load_pretrained(
        CLIPVisionModel.from_pretrained, path, what, output_loading_info=True, **kwargs
    )
    unused = [k for k in info.get("unexpected_keys") or () if not k.startswith(CLIP_NON_VISION)]
    check_loading_info(model, {**info, "unexpected_keys": unused}, path, what)
    return model


def vision_config_from(vision_dir: Path) -> Any:
    """A ``CLIPVisionConfig`` from a vision-tower folder (a full CLIP config gives its vision
    part)."""
    config = AutoConfig.from_pretrained(vision_dir, trust_remote_code=False)
    return config.vision_config if config.model_type == "clip" else config


def config_from_official(raw: dict[str, Any], folder: Path, keys: set[str]) -> IAAConfig:
    """Official flat config -> IAAConfig (IAA-14 positions; the G branch if its keys are
    present)."""
    vision_dir = resolve_vision_dir(raw.get("mm_vision_tower"), folder)
    if vision_dir is None:
        raise ModelError(
            f"{folder / 'config.json'}: mm_vision_tower={raw.get('mm_vision_tower')!r} is not a "
            f"directory (relative names resolve against {folder}); download the CLIP tower and "
            "point mm_vision_tower at it"
        )
    text_fields = {k: v for k, v in raw.items() if k not in _OFFICIAL_MM_FIELDS}
    text_config = LlamaConfig(**text_fields)
    vocab = text_config.vocab_size
    return IAAConfig(
        text_config=text_config,
        vision_config=vision_config_from(vision_dir),
        insert_after_layers=raw.get("insert_after_layers", list(IAA14_POSITIONS)),
        workflows=["mm", "g"] if any(k.startswith(GROUNDING_PREFIX) for k in keys) else ["mm"],
        mm_hidden_size=raw.get("mm_hidden_size"),
        projector_type=raw.get("mm_projector_type", "mlp2x_gelu"),
        vision_feature_layer=raw.get("mm_vision_select_layer", -2),
        vision_feature_select=raw.get("mm_vision_select_feature", "patch"),
        image_token_id=raw.get("image_token_id",
                               LLAMA3_IMAGE_TOKEN_ID if vocab > LLAMA3_IMAGE_TOKEN_ID else None),
        image_aspect_ratio=raw.get("image_aspect_ratio", "pad"),
        vision_tower_path=str(vision_dir),
    )


def _vision_tensors(vision_dir: Path | None, what: Path) -> dict[str, torch.Tensor]:
    """The tower's weights from its own folder, keyed as inside an IAA checkpoint."""
    if vision_dir is None:
        raise ModelError(f"{what}: the checkpoint has no {VISION_PREFIX}* keys and no vision-tower "
                         "folder to take them from")
    # keys "vision_model.x" (official, full CLIP) or "x" (5.x)
    tensors = read_tensors(weight_files(vision_dir))
    bare = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
    out = {VISION_PREFIX + k: v for k, v in tensors.items() if k.startswith("vision_model.")}
    out.update({VISION_PREFIX + "vision_model." + k: v
                for k, v in tensors.items() if k.startswith(bare)})
    return out


def check_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Missing/unexpected keys (listed, as every loader lists them) and every tensor's shape
    against the model's."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    refuse_unmatched(type(model).__name__, missing, unexpected, str(where), "IAA checkpoint")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != tuple(shape):
            hint = " (projector/LM hidden size mismatch)" if "mm_projector" in key else ""
            raise ModelError(f"{where}: {key} has shape {tuple(tensors[key].shape)}, the config "
                             f"implies {tuple(shape)}{hint}")


def read_checkpoint(path: str | os.PathLike, dtype: torch.dtype | None = None
                    ) -> tuple[IAAConfig, dict[str, torch.Tensor]]:
    """The config and the tensors (keyed as the model's state dict, cast to ``dtype``) of a
    checkpoint in our layout or the official one (see module docstring)."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").exists():
        raise ModelError(f"{folder}: no config.json (not a checkpoint folder)")
    raw = read_json(folder / "config.json")
    files = weight_files(folder)
    keys = set(read_tensors(files, keys_only=True))
    model_type = raw.get("model_type")
    if model_type not in (OFFICIAL_MODEL_TYPE, IAAConfig.model_type):
        expected = f"{OFFICIAL_MODEL_TYPE!r} or {IAAConfig.model_type!r}"
        raise ModelError(f"{folder / 'config.json'}: model_type={model_type!r} is not "
                         f"an IAA checkpoint (expected {expected})")
    try:  # IAAConfig names the field at fault (e.g. an insertion position past the layer count)
        if model_type == OFFICIAL_MODEL_TYPE:
            config = config_from_official(raw, folder, keys)
        else:
            config = IAAConfig.from_pretrained(folder)
    except ValueError as exc:
        raise ModelError(f"{folder / 'config.json'}: {exc}") from exc
    tensors = {k: v for k, v in read_tensors(files).items()
               if not k.endswith("rotary_emb.inv_freq")}
    if not any(k.startswith(VISION_PREFIX) for k in tensors):
        vision_dir = resolve_vision_dir(config.vision_tower_path, folder)
        tensors.update(_vision_tensors(vision_dir, folder))
    tensors = {from_checkpoint_key(k): v for k, v in tensors.items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return config, tensors


def official_config(model: nn.Module, vision_dir_name: str) -> dict[str, Any]:
    """The official flat ``config.json`` of ``model`` (Llama bases only: the official code is
    Llama).

    Positions other than IAA-14 and a non-Llama-3 image token are written as extra fields
    (``insert_after_layers``, ``image_token_id``) that the official code ignores and we read back.
    """
    config = model.config
    if config.text_config.model_type != "llama":
        raise ModelError("the official layout holds a Llama base, not "
                         f"{config.text_config.model_type!r}; save in our layout")
    flat = config.text_config.to_dict()
    rope = flat.pop("rope_parameters", None) or {}
    flat.update(rope_theta=rope.get("rope_theta", 10000.0), rope_scaling=None)
    flat.update(
        model_type=OFFICIAL_MODEL_TYPE, architectures=["IAALlamaForCausalLM"],
        mm_vision_tower=vision_dir_name, mm_hidden_size=config.mm_hidden_size,
        mm_projector_type=config.projector_type,
        mm_vision_select_layer=config.vision_feature_layer,
        mm_vision_select_feature=config.vision_feature_select,
        mm_use_im_start_end=False, mm_use_im_patch_token=False, tune_mm_mlp_adapter=False,
        image_aspect_ratio=config.image_aspect_ratio, use_mm_proj=True,
    )
    if config.insert_after_layers != list(IAA14_POSITIONS):
        flat["insert_after_layers"] = config.insert_after_layers
    if config.image_token_id is not None and config.image_token_id != LLAMA3_IMAGE_TOKEN_ID:
        flat["image_token_id"] = config.image_token_id
    return flat


def save_iaa(model: nn.Module, path: str | os.PathLike, official: bool = False,
             vision_inside: bool = True, tokenizer: Any = None,
             image_processor: Any = None) -> Path:
    """Write a checkpoint folder: config, ``model.safetensors``, optionally tokenizer and image
    processor.

    ``official=True`` writes the official config with ``mm_vision_tower="vision_tower"`` (relative)
    and a ``vision_tower/`` folder holding the CLIP config (+ processor); ``vision_inside=False``
    moves the tower's weights there too instead of ``model.safetensors``.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for key, value in model.state_dict().items():
        if official and not vision_inside and key.startswith(VISION_PREFIX):
            continue
        value = value.detach().cpu().contiguous()
        # safetensors refuses shared storage (tied embeddings)
        tensors[to_checkpoint_key(key)] = value.clone() if value.data_ptr() in seen else value
        seen.add(value.data_ptr())
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    processor_dir = folder
    if official:
        processor_dir = folder / "vision_tower"
        clip = model.model.vision_tower.vision_tower
        if vision_inside:
            clip.config.save_pretrained(processor_dir)
        else:
            clip.save_pretrained(processor_dir)
        config = json.dumps(official_config(model, "vision_tower"), indent=2)
        (folder / "config.json").write_text(config)
    else:
        model.config.save_pretrained(folder)
    if image_processor is not None:
        image_processor.save_pretrained(processor_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
