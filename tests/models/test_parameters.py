"""Parameter accounting on tiny models, and the paper's 8B arithmetic on a meta-device model."""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.parameters import parameter_counts, tally
from tests.conftest import tiny_llama_config
from tests.iaa_helpers import tiny_parts


def test_tiny_iaa_counts() -> None:
    tokenizer, base, clip, _ = tiny_parts(seed=81)
    model = IAAForCausalLM.from_base(base, clip, positions=[0, 2])
    counts = parameter_counts(model)
    base_n = sum(p.numel() for p in base.parameters())
    layer_n = sum(p.numel() for p in base.model.layers[0].parameters())
    emb_n, head_n, norm_n = base.model.embed_tokens.weight.numel(), base.lm_head.weight.numel(), 32
    projector_n = 32 * 32 + 32 + 32 * 32 + 32
    assert counts.base == base_n and counts.vision == sum(p.numel() for p in clip.parameters())
    assert counts.added == 2 * layer_n + emb_n + head_n + norm_n + projector_n
    assert counts.trainable == counts.added  # from_base freezes base and tower only
    assert counts.total == tally(model).parameters


def test_shared_tensors_count_once_and_bytes_include_buffers() -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(64, tie_word_embeddings=True))
    distinct = {id(p): p for p in model.parameters()}.values()
    counted = tally(model)
    assert counted.parameters == sum(p.numel() for p in distinct)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert counted.bytes == sum(p.numel() * p.element_size() for p in distinct) + buffers
    model.model.layers[0].requires_grad_(False)
    frozen = sum(p.numel() for p in model.model.layers[0].parameters())
    assert tally(model, trainable_only=True).parameters == counted.parameters - frozen


def test_llama3_8b_iaa14_matches_the_spec_arithmetic() -> None:
    text = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14)
    with torch.device("meta"):
        base, clip = LlamaForCausalLM(text), CLIPVisionModel(vision)
        model = IAAForCausalLM.from_base(base, clip, positions="iaa-14")
    counts = parameter_counts(model)
    assert round(counts.base / 1e9, 2) == 8.03 and round(counts.added / 1e9, 2) == 4.13
    assert round(counts.vision / 1e9, 2) == 0.30
    # serving text + images in bf16: one IAA model vs the base plus a LLaVA-1.5 (a fine-tuned copy
    # of the base, the same tower and a projector of IAA's shape)
    projector = tally(model.model.mm_projector).parameters
    assert round(2 * counts.total / 1e9, 1) == 24.9
    assert round(2 * (2 * counts.base + counts.vision + projector) / 1e9, 1) == 32.8
