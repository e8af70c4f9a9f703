"""No silent random weights: a checkpoint missing weights, carrying unused ones, or of another
architecture than the class is refused, naming the weights; tied weights are not 'missing'."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from iaa_eval.errors import ModelError
from iaa_eval.models import load_model
from iaa_eval.models.base import ModelSpec
from iaa_eval.models.loading import load_weights
from tests.conftest import save_tiny_llama
from tests.vlm_checkpoints import save_family


def _edit_weights(folder: Path, fragment: str, replacement: str | None) -> list[str]:
    """Rename (or, with ``None``, delete) every stored weight whose name contains ``fragment``."""
    file = folder / "model.safetensors"
    weights = load_file(file)
    hit = [k for k in weights if fragment in k]
    assert hit, f"no stored weight contains {fragment!r}: {sorted(weights)[:8]}"
    for key in hit:
        tensor = weights.pop(key)
        if replacement is not None:
            weights[key.replace(fragment, replacement)] = tensor
    save_file(weights, file, metadata={"format": "pt"})
    return hit


@pytest.mark.parametrize(
    ("model_type", "fragment", "replacement", "named"),
    [
        (
            "idefics3",
            "text_model.",
            "language_model.",
            "text_model.embed_tokens",
        ),  # the LM filed elsewhere
        ("smolvlm", "text_model.layers.1.", None, "text_model.layers.1."),
        ("deepseek_vl", "aligner.", None, "aligner."),  # the projector missing
        ("gemma3", "mm_input_projection_weight", None, "mm_input_projection_weight"),
        (
            "mistral3",
            "multi_modal_projector.",
            "mm_projector.",
            "multi_modal_projector.",
        ),  # projector renamed
    ],
)
def test_missing_or_renamed_weights_are_refused(
    model_type: str, fragment: str, replacement: str | None, named: str, tmp_path: Path
) -> None:
    from transformers import AutoModelForImageTextToText

    folder = save_family(model_type, tmp_path / model_type)
    _edit_weights(folder, fragment, replacement)
    with pytest.raises(
        ModelError, match="weights do not match"
    ) as error:  # what the vlm kind loads with
        load_weights(AutoModelForImageTextToText.from_pretrained, str(folder), "model")
    message = str(error.value)
    assert named in message and "missing from the checkpoint" in message
    assert ("not used by the model" in message) == (replacement is not None)
    assert "\n" not in message


def test_the_vlm_kind_refuses_random_language_model_weights(tmp_path: Path) -> None:
    folder = save_family("idefics3", tmp_path / "idefics3")
    _edit_weights(folder, "text_model.norm", None)
    with pytest.raises(ModelError, match=r"1 weights missing .*text_model\.norm\.weight"):
        load_model(ModelSpec("v", "vlm", str(folder)))


def test_a_class_for_another_model_type_is_refused(tmp_path: Path) -> None:
    """LlavaForConditionalGeneration would convert an Idefics3 config and load nothing of its LM."""
    from transformers import LlavaForConditionalGeneration

    folder = save_family("idefics3", tmp_path / "idefics3")
    with pytest.raises(
        ModelError, match="model_type 'idefics3' but LlavaForConditionalGeneration is for 'llava'"
    ):
        load_weights(LlavaForConditionalGeneration.from_pretrained, str(folder), "model")


def test_unsupported_vlm_family_is_named_with_the_supported_ones(tmp_path: Path) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model("mllama").save_pretrained(tmp_path)
    with pytest.raises(
        ModelError, match=r"model_type 'mllama' is not a supported VLM family; supported: llava, "
    ):
        load_model(ModelSpec("v", "vlm", str(tmp_path)))


def test_hf_kind_refuses_a_missing_layer_but_not_a_tied_head(tmp_path: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from tests.conftest import build_tokenizer, tiny_llama_config

    tokenizer = build_tokenizer()
    tied = LlamaForCausalLM(tiny_llama_config(len(tokenizer), tie_word_embeddings=True))
    tied.save_pretrained(tmp_path / "tied")
    tokenizer.save_pretrained(tmp_path / "tied")
    assert "lm_head.weight" not in load_file(tmp_path / "tied" / "model.safetensors")
    model = load_model(ModelSpec("b", "hf", str(tmp_path / "tied")))
    assert torch.equal(model.model.lm_head.weight, model.model.model.embed_tokens.weight)

    broken = save_tiny_llama(tmp_path / "broken")
    _edit_weights(broken, "layers.1.mlp.down_proj", None)
    with pytest.raises(ModelError, match=r"1 weights missing .*layers\.1\.mlp\.down_proj\.weight"):
        load_model(ModelSpec("b", "hf", str(broken)))
    shutil.rmtree(broken)
