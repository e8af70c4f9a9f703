"""Images are preprocessed by the PIL backend wherever the code runs: a torchvision-backed image
processor (what transformers 5 builds where torchvision is installed, as on the GPU machines) is
swapped for its PIL twin with the same settings, in the vlm and IAA adapters and IAA training."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers.image_processing_backends import PilBackend, TorchvisionBackend

from iaa_eval.errors import ModelError
from iaa_eval.models.vision import pil_image_processor

log = logging.getLogger(__name__)
PAIRS = ["CLIPImageProcessor", "LlavaNextImageProcessor", "Qwen2VLImageProcessor",
         "Gemma3ImageProcessor", "SiglipImageProcessor"]


def as_torchvision(pil: Any, name: str) -> Any:
    """An instance of the torchvision class ``name`` with ``pil``'s settings (torchvision cannot be
    installed beside this project's CPU torch, so the class is not instantiated the usual way)."""
    stand_in = object.__new__(getattr(transformers, name))
    stand_in.__dict__.update(pil.__dict__)
    return stand_in


def random_settings(name: str, rng: random.Random) -> dict[str, Any]:
    side = rng.choice([28, 56, 84])
    if name in ("CLIPImageProcessor", "LlavaNextImageProcessor"):
        return {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side},
                "image_mean": [rng.random() for _ in range(3)]}
    if name == "Qwen2VLImageProcessor":
        return {"min_pixels": 28 * 28 * 4, "max_pixels": side * side * 4, "patch_size": 14}
    return {"size": {"height": side, "width": side}, "image_std": [rng.random() + 0.5] * 3}


@pytest.mark.parametrize("name", PAIRS)
def test_a_torchvision_processor_becomes_its_pil_twin(name: str, fresh_seed: int) -> None:
    rng = random.Random(fresh_seed)
    log.info("seed %d", fresh_seed)
    pil = getattr(transformers, f"{name}Pil")(**random_settings(name, rng))
    assert pil_image_processor(pil) is pil
    twin = pil_image_processor(as_torchvision(pil, name))
    assert type(twin) is type(pil) and isinstance(twin, PilBackend)
    assert not isinstance(twin, TorchvisionBackend)
    drop = ("image_processor_type",)
    assert ({k: v for k, v in twin.to_dict().items() if k not in drop}
            == {k: v for k, v in pil.to_dict().items() if k not in drop})
    pixels = np.random.default_rng(fresh_seed).integers(0, 255, (rng.randrange(30, 90),
                                                                 rng.randrange(30, 90), 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    expected = pil(images=[image], return_tensors="pt")["pixel_values"]
    assert torch.equal(twin(images=[image], return_tensors="pt")["pixel_values"], expected)


def test_a_torchvision_processor_without_a_pil_twin_is_refused() -> None:
    class LonelyImageProcessor(TorchvisionBackend):
        pass

    stand_in = object.__new__(LonelyImageProcessor)
    with pytest.raises(ModelError, match="LonelyImageProcessor: transformers has no PIL twin"):
        pil_image_processor(stand_in)


def test_the_adapters_preprocess_with_pil_whatever_they_are_given(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """vlm (its processor and the prepare thread's copy), IAA in memory and IAA from a folder."""
    from iaa_eval.models.base import ModelSpec
    from iaa_eval.models.iaa import convert
    from iaa_eval.models.iaa.adapter import IAAModel
    from iaa_eval.models.vlm import VLMModel
    from tests.iaa_helpers import tiny_iaa
    from tests.vlm_checkpoints import save_family

    folder = save_family("llava", tmp_path / "llava")
    loaded = VLMModel(ModelSpec("llava", "vlm", str(folder)))
    processor = loaded.processor
    processor.image_processor = as_torchvision(processor.image_processor, "CLIPImageProcessor")
    vlm = VLMModel.from_model(ModelSpec("llava", "vlm", "in-memory"), loaded.model, processor)
    for image_processor in (vlm.processor.image_processor, vlm._host.image_processor.inner):
        assert type(image_processor).__name__ == "CLIPImageProcessorPil"

    tokenizer, _, _, clip_processor, model = tiny_iaa(seed=3)
    stand_in = as_torchvision(clip_processor, "CLIPImageProcessor")
    iaa = IAAModel.from_model(ModelSpec("iaa", "iaa", "in-memory"), model, tokenizer, stand_in)
    assert type(iaa.image_processor).__name__ == "CLIPImageProcessorPil"

    clip_processor.save_pretrained(tmp_path / "iaa")
    monkeypatch.setattr(convert.CLIPImageProcessor, "from_pretrained",
                        classmethod(lambda cls, *a, **k: stand_in))
    assert type(convert.load_image_processor(tmp_path / "iaa", None)).__name__ == (
        "CLIPImageProcessorPil")


def test_every_family_image_processor_has_a_pil_twin() -> None:
    """On a machine with torchvision each family's processor gets its torchvision class: the
    swap must find a twin for all of them (a transformers release that drops one fails here)."""
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    from iaa_eval.models.vlm_families import FAMILIES

    for model_type in [*FAMILIES, "clip"]:
        classes = IMAGE_PROCESSOR_MAPPING_NAMES[model_type]
        twin = getattr(transformers, f"{classes['torchvision']}Pil")
        assert twin.__name__ == classes["pil"] and issubclass(twin, PilBackend), model_type
