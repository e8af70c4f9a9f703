"""The ``iaa`` adapter: text view = the base LM (same fingerprint as ``hf``), batched == single."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from iaa_eval.errors import ModelError
from iaa_eval.models import load_model
from iaa_eval.models.base import EvalModel, MMRequest, ModelSpec
from iaa_eval.models.iaa import adapter as adapter_module
from iaa_eval.models.iaa.adapter import IAAModel
from iaa_eval.models.vision import image_key
from tests.iaa_helpers import random_image, tiny_iaa
from tests.models.conftest import record_new_tokens, record_prefills


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base saved in HF format, IAA built from it in our layout), sharing one tokenizer."""
    tokenizer, base, _, processor, model = tiny_iaa(seed=11, workflows=("mm", "g"))
    base_dir, iaa_dir = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("iaa")
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    model.save_pretrained(iaa_dir, tokenizer=tokenizer, image_processor=processor)
    return base_dir, iaa_dir


def test_text_view_is_the_base_lm_with_the_hf_fingerprint(checkpoints: tuple[Path, Path]) -> None:
    base_dir, iaa_dir = checkpoints
    iaa, hf = load_model(ModelSpec("iaa", "iaa", str(iaa_dir))), load_model(ModelSpec("base", "hf", str(base_dir)))
    assert isinstance(iaa, EvalModel)
    view = iaa.text_view()
    assert type(view.model).__name__ == "LlamaForCausalLM"
    assert view.fingerprint == hf.text_view().fingerprint
    assert iaa.fingerprint("mm") not in (view.fingerprint, load_model(ModelSpec("g", "iaa", f"{iaa_dir}#g")).fingerprint("mm"))
    ids = torch.tensor([[5, 9, 33, 7, 80, 12]])
    assert torch.equal(view.model(ids).logits, hf.model(ids).logits)
    assert view.model.model.layers[0].mlp.up_proj.weight is iaa.model.model.layers[0].mlp.up_proj.weight


def test_batched_generation_equals_one_at_a_time_and_images_are_encoded_once(checkpoints: tuple[Path, Path]) -> None:
    _, iaa_dir = checkpoints
    model = IAAModel(ModelSpec("iaa", "iaa", str(iaa_dir), batch_size=3))
    wide, tall = random_image(1, (44, 28)), random_image(2, (20, 36))
    requests = [
        MMRequest("What colour is the shape?", wide, max_new_tokens=5),
        MMRequest("Why?", None, max_new_tokens=5),
        MMRequest("Is there a dog? Please answer yes or no.", tall, max_new_tokens=5),
        MMRequest("What shape?", wide, max_new_tokens=5),
    ]
    batched = model.generate(requests)
    assert model.feature_cache.misses == 2 and model.feature_cache.hits == 1
    assert batched == [model.generate([r])[0] for r in requests]
    assert model.feature_cache.misses == 2


def test_bad_paths_and_suffixes(tmp_path: Path, checkpoints: tuple[Path, Path]) -> None:
    with pytest.raises(ModelError, match="no such directory"):
        IAAModel(ModelSpec("iaa", "iaa", str(tmp_path / "missing")))
    with pytest.raises(ModelError, match="workflow suffix #x unknown"):
        IAAModel(ModelSpec("iaa", "iaa", f"{checkpoints[1]}#x"))


def test_official_layout_loads_quietly(tmp_path: Path) -> None:
    """The official config.json (model_type "IAA", rope_scaling null) is read once, by our loader:
    transformers' tokenizer loading must not re-read it (it warned on every load before)."""
    tokenizer, _, _, processor, model = tiny_iaa(seed=12)
    model.save_pretrained(tmp_path, official=True, tokenizer=tokenizer, image_processor=processor)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        adapter = IAAModel(ModelSpec("iaa", "iaa", str(tmp_path)))
    assert adapter.tokenizer.get_vocab() == tokenizer.get_vocab()


def _mme_shaped(seed: int) -> list[MMRequest]:
    """Two or three questions per image, of different lengths and sharing leading words, plus
    an image asked once."""
    rng = np.random.default_rng(seed)
    images = [random_image(int(rng.integers(1 << 30)), (int(rng.integers(16, 48)), 32)) for _ in range(3)]
    words = ["red", "blue", "green", "circle", "square", "small", "in", "the", "image"]
    questions = [" ".join(["Is", "there", "a", *rng.choice(words, size=rng.integers(1, 7))]) + "?" for _ in range(6)]
    layout = [0, 0, 1, 1, 1, 2]
    return [MMRequest(q, images[i], image_key(images[i]), max_new_tokens=6)
            for q, i in zip(questions, layout, strict=True)]


@pytest.mark.parametrize("workflow", ["", "#g"])
def test_questions_of_one_image_share_the_prompt_prefix(checkpoints: tuple[Path, Path], workflow: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        fresh_seed: int) -> None:
    """MME-shaped: two or three questions per image, of different lengths and sharing leading words,
    plus an image asked once; the token ids equal those of the path that runs every whole prompt."""
    _, iaa_dir = checkpoints
    model = IAAModel(ModelSpec("iaa", "iaa", f"{iaa_dir}{workflow}", batch_size=8))
    model.share_prefixes = False
    for attempt in range(8):  # a random tiny model can give every row the same answer: redraw
        requests = _mme_shaped(fresh_seed + attempt)
        if len(set(model.generate(requests))) > 1:
            break
    model.share_prefixes = True
    prefills = record_prefills(monkeypatch, adapter_module)
    tokens = record_new_tokens(monkeypatch, model.model)
    model.generate(requests)
    # one prefill: each image's head (the prompt's start, the image, "Is there a")
    assert len(prefills) == 1 and min(prefills[0].values()) > 3
    model.share_prefixes = False
    model.generate(requests)
    shared, whole = tokens
    assert torch.equal(shared, whole)
    assert len({tuple(row.tolist()) for row in whole}) > 1  # the rows' answers differ


@pytest.mark.parametrize(
    ("stored", "key"),
    [
        ("model.layers.1.self_attn.q_proj.weight",) * 2,  # the frozen base LM's
        (  # the vision tower's, stored in the official layout
            "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
            "model.vision_tower.vision_tower.encoder.layers.0.mlp.fc1.weight",
        ),
        ("model.mm_projector_G.0.weight",) * 2,  # the grounding branch's projector
    ],
)
def test_a_checkpoint_without_a_weight_is_refused_naming_it(
    tmp_path: Path, checkpoints: tuple[Path, Path], stored: str, key: str
) -> None:
    """Never a random weight: the adapter refuses the checkpoint, one line naming the key."""
    folder = tmp_path / "iaa"
    folder.mkdir()
    for file in checkpoints[1].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    tensors = load_file(folder / "model.safetensors")
    del tensors[stored]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=f"1 weights missing from the checkpoint.*: {key};") as err:
        load_model(ModelSpec("iaa", "iaa", str(folder)))
    assert "\n" not in str(err.value)


def test_images_already_encoded_are_not_preprocessed_again(checkpoints: tuple[Path, Path],
                                                          fresh_seed: int) -> None:
    """A batch whose images are all in the feature cache asks the image processor for nothing:
    torchvision's processors refuse an empty list (an IndexError on the GPU machine)."""
    _, iaa_dir = checkpoints
    model = IAAModel(ModelSpec("iaa", "iaa", str(iaa_dir), batch_size=2))
    requests = _mme_shaped(fresh_seed)
    first = model.generate(requests)
    real = model.image_processor

    class RefusesEmpty:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def __call__(self, images: list, **kwargs: object) -> object:
            if not images:
                raise IndexError("list index out of range")
            return real(images=images, **kwargs)

    model.image_processor = RefusesEmpty()
    assert model.generate(requests) == first


def test_auto_budgets_the_insertion_layers_kv_too(checkpoints: tuple[Path, Path]) -> None:
    """The MM workflow keeps K/V in the base's layers and in each insertion layer: ``auto`` sizes
    batches for all of them (IAA-14 on Llama-3-8B: 46, not 32)."""
    _, iaa_dir = checkpoints
    model = IAAModel(ModelSpec("iaa", "iaa", str(iaa_dir), batch_size="auto"))
    config = model.model.config
    assert len(config.insert_after_layers) > 0
    assert model.batcher.kv_layers == (config.text_config.num_hidden_layers
                                       + len(config.insert_after_layers))
