"""Parameter accounting on a tiny model, and the paper's 8B arithmetic on a meta-device model."""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.iaa.accounting import parameter_counts, serving_cost
from tests.iaa_helpers import tiny_parts


def test_tiny_counts_and_serving_cost() -> None:
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
    cost = serving_cost(model, bytes_per_param=2)
    assert cost.iaa_bytes == 2 * counts.total
    assert cost.base_plus_llava_bytes == 2 * (2 * base_n + counts.vision + projector_n)


def test_llama3_8b_iaa14_matches_the_spec_arithmetic() -> None:
    text = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14)
    with torch.device("meta"):
        base, clip = LlamaForCausalLM(text), CLIPVisionModel(vision)
        model = IAAForCausalLM.from_base(base, clip, positions="iaa-14")
    counts = parameter_counts(model)
    assert round(counts.base / 1e9, 2) == 8.03 and round(counts.added / 1e9, 2) == 4.13
    assert round(counts.vision / 1e9, 2) == 0.30
    cost = serving_cost(model)
    assert round(cost.iaa_bytes / 1e9, 1) == 24.9 and round(cost.base_plus_llava_bytes / 1e9, 1) == 32.8
