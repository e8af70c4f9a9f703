"""IAAForCausalLM on tiny random models: equivalences, caching, padding, from_base, bad input."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch
from transformers import DynamicCache

from iaa_eval.errors import ModelError
from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.iaa import modeling as modeling_module
from tests.iaa_helpers import tiny_iaa, tiny_parts

SEEDS = [101, 202]


def ids_with_image(generator: torch.Generator, vocab: int, before: int, after: int) -> torch.Tensor:
    left = torch.randint(3, vocab, (before,), generator=generator)
    right = torch.randint(3, vocab, (after,), generator=generator)
    return torch.cat([left, torch.tensor([-200]), right])


def two_prompts(generator: torch.Generator, vocab: int, workflow: str
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Two 8-token prompts, the image placeholder at different places, and their pixels (``mm``);
    for the text workflow the placeholder is an ordinary token."""
    ids = torch.stack([ids_with_image(generator, vocab, 2, 5), ids_with_image(generator, vocab, 5, 2)])
    pixels = torch.randn(2, 3, 32, 32, generator=generator) if workflow == "mm" else None
    if workflow == "text":
        ids[ids == -200] = 7
    return ids, pixels


@pytest.mark.parametrize("seed", SEEDS)
def test_text_workflow_is_bit_identical_to_the_base(seed: int) -> None:
    tokenizer, base, _, _, model = tiny_iaa(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, len(tokenizer), (3, 13), generator=gen)
    assert torch.equal(model(ids).logits, base(ids).logits)
    assert torch.equal(model(ids, attention_mask=torch.ones_like(ids)).logits, base(ids).logits)
    cache_ours, cache_base = DynamicCache(), DynamicCache(config=base.config)
    model(ids[:, :9], cache=cache_ours, use_cache=True)
    base(ids[:, :9], cache=cache_base, use_cache=True)
    assert torch.equal(model(ids[:, 9:], cache=cache_ours, use_cache=True).logits,
                       base(ids[:, 9:], cache=cache_base, use_cache=True).logits)


def test_mm_equals_a_hand_written_loop() -> None:
    """The IAA data flow spelled out: MM embedding, splice, base layer then insertion layer, MM norm/head."""
    tokenizer, base, clip, _, model = tiny_iaa(seed=5, layers=4, positions=(1, 3))
    gen = torch.Generator().manual_seed(5)
    ids = ids_with_image(gen, len(tokenizer), 3, 4)[None]
    pixels = torch.randn(1, 3, 32, 32, generator=gen)
    with torch.no_grad():
        features = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        image = model.model.mm_projector(features)[0]
        emb = model.model.embed_tokens_condition
        h = torch.cat([emb(ids[0, :3]), image, emb(ids[0, 4:])])[None]
        pos = torch.arange(h.shape[1])[None]
        rope = base.model.rotary_emb(h, pos)
        for i, layer in enumerate(base.model.layers):
            h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=rope)
            if i in (1, 3):
                h = model.model.condition_layers[(1, 3).index(i)](h, attention_mask=None, position_ids=pos,
                                                                   position_embeddings=rope)
        expected = model.lm_head_condtion(model.model.norm_condition(h))
    out = model(ids, pixel_values=pixels, workflow="mm").logits
    assert out.shape == (1, 7 - 1 + 16 + 1, len(tokenizer))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("workflow", ["text", "mm", "g"])
def test_cached_generation_equals_uncached(workflow: str) -> None:
    tokenizer, _, _, _, model = tiny_iaa(seed=31)
    gen = torch.Generator().manual_seed(31)
    if workflow == "text":
        ids, pixels = torch.randint(3, len(tokenizer), (2, 9), generator=gen), None
    else:
        ids = torch.stack([ids_with_image(gen, len(tokenizer), 2, 5), ids_with_image(gen, len(tokenizer), 5, 2)])
        pixels = torch.randn(2, 3, 32, 32, generator=gen)
    cached = model.generate(ids, pixel_values=pixels, workflow=workflow, max_new_tokens=8, eos_token_id=[])
    uncached = model.generate(ids, pixel_values=pixels, workflow=workflow, max_new_tokens=8, eos_token_id=[],
                              use_cache=False)
    assert cached.shape == (2, ids.shape[1] + 8) and torch.equal(cached[:, : ids.shape[1]], ids)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("workflow", ["text", "mm", "g"])
def test_left_padded_batch_equals_rows_one_at_a_time(workflow: str) -> None:
    tokenizer, _, _, _, model = tiny_iaa(seed=41)
    gen = torch.Generator().manual_seed(41)
    vocab, pad = len(tokenizer), tokenizer.pad_token_id
    if workflow == "text":
        rows = [torch.randint(3, vocab, (n,), generator=gen) for n in (4, 9, 6)]
        pixels = [None, None, None]
    else:  # one blind row: its spliced length differs by 15 from the others
        rows = [ids_with_image(gen, vocab, 1, 2), torch.randint(3, vocab, (7,), generator=gen),
                ids_with_image(gen, vocab, 4, 3)]
        pixels = [torch.randn(1, 3, 32, 32, generator=gen), None, torch.randn(1, 3, 32, 32, generator=gen)]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.full((width - len(r),), pad), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r)), torch.ones(len(r))]).long() for r in rows])
    stacked = torch.cat([p for p in pixels if p is not None]) if workflow != "text" else None
    batched = model.generate(ids, attention_mask=mask, pixel_values=stacked, workflow=workflow, max_new_tokens=6,
                             eos_token_id=[])
    batch_logits = model(ids, attention_mask=mask, pixel_values=stacked, workflow=workflow).logits[:, -1]
    for b, (row, px) in enumerate(zip(rows, pixels, strict=True)):
        single = model.generate(row[None], pixel_values=px, workflow=workflow, max_new_tokens=6, eos_token_id=[])
        assert torch.equal(batched[b, width:], single[0, len(row):])
        single_logits = model(row[None], pixel_values=px, workflow=workflow).logits[0, -1]
        torch.testing.assert_close(batch_logits[b], single_logits, rtol=0, atol=1e-5)


def test_generation_stops_at_eos_and_pads_finished_rows() -> None:
    tokenizer, _, _, _, model = tiny_iaa(seed=51)
    ids = torch.randint(3, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(51))
    free = model.generate(ids, max_new_tokens=4, eos_token_id=[])
    stop = int(free[0, 6])
    out = model.generate(ids, max_new_tokens=4, eos_token_id=stop, pad_token_id=2)
    assert out[0, 6] == stop and (out[0, 7:] == 2).all()


def test_from_base_shares_and_freezes_and_copies() -> None:
    tokenizer, base, clip, _ = tiny_parts(seed=61)
    model = IAAForCausalLM.from_base(base, clip, positions=[0, 2], workflows=("mm", "g"))
    assert model.model.layers is base.model.layers and model.lm_head is base.lm_head
    assert model.model.embed_tokens.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()
    assert not any(p.requires_grad for p in base.parameters()) and not any(p.requires_grad for p in clip.parameters())
    for branch in ("mm", "g"):
        b = model.branch(branch)
        for k, after in enumerate([0, 2]):
            ours, theirs = b.layers[k].state_dict(), base.model.layers[after].state_dict()
            assert all(torch.equal(ours[n], theirs[n]) for n in theirs)
            assert b.layers[k].self_attn.q_proj.weight.data_ptr() != base.model.layers[after].self_attn.q_proj.weight.data_ptr()
            assert b.layers[k].self_attn.layer_idx == 3 + k
        assert torch.equal(b.embed.weight, base.model.embed_tokens.weight) and torch.equal(b.head.weight, base.lm_head.weight)
        assert all(p.requires_grad for p in b.layers.parameters())
    keys = set(model.state_dict())
    assert {"model.condition_layers.1.mlp.up_proj.weight", "lm_head_condtion.weight", "model.mm_projector.2.bias",
            "model.norm_condition_grounding.weight", "lm_head_condtion_grounding.weight",
            "model.mm_projector_G.0.weight", "model.embed_tokens_condition_grounding.weight"} <= keys
    assert not any(k.startswith("base_lm") for k in keys)


def test_copy_init_mm_applies_the_chosen_layers_twice() -> None:
    tokenizer, base, clip, _ = tiny_parts(seed=62)
    model = IAAForCausalLM.from_base(base, clip, positions=[1])
    ids = torch.randint(3, len(tokenizer), (1, 8), generator=torch.Generator().manual_seed(62))
    h = base.model.embed_tokens(ids)
    pos = torch.arange(8)[None]
    rope = base.model.rotary_emb(h, pos)
    from transformers.masking_utils import create_causal_mask

    mask = create_causal_mask(config=base.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=pos)
    for i, layer in enumerate(base.model.layers):
        for _ in range(2 if i == 1 else 1):
            h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope)
    torch.testing.assert_close(model(ids, workflow="mm").logits, base.lm_head(base.model.norm(h)), rtol=0, atol=1e-5)


def test_forward_stays_short_and_in_order() -> None:
    source = textwrap.dedent(inspect.getsource(IAAForCausalLM.forward))
    node = ast.parse(source).body[0]
    assert node.end_lineno - node.lineno + 1 <= 80
    assert len(inspect.getsource(modeling_module).splitlines()) <= 310


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workflow": "mm", "pixel_values": "two"}, r"hold 1 image placeholder\(s\) \(-200\) but 2 image\(s\)"),
        ({"workflow": "mm", "pixel_values": None}, r"hold 1 image placeholder\(s\) \(-200\) but 0 image\(s\)"),
        ({"workflow": "text", "pixel_values": "one"}, "workflow='text' takes no images"),
        ({"workflow": "text", "pixel_values": None}, "workflow='text' got image placeholders"),
        ({"workflow": "x", "pixel_values": None}, "workflow='x': this model has workflows text, mm"),
        ({"workflow": "mm", "image_features": "narrow"}, "width 8 but the projector expects mm_hidden_size=32"),
    ],
)
def test_bad_forward_inputs(kwargs: dict, message: str) -> None:
    tokenizer, _, _, _, model = tiny_iaa(seed=71, workflows=("mm",))
    ids = ids_with_image(torch.Generator().manual_seed(71), len(tokenizer), 2, 2)[None]
    pixels = {"one": torch.randn(1, 3, 32, 32), "two": torch.randn(2, 3, 32, 32), None: None}
    if "pixel_values" in kwargs:
        kwargs["pixel_values"] = pixels[kwargs["pixel_values"]]
    if "image_features" in kwargs:
        kwargs["image_features"] = torch.randn(1, 16, 8)
    with pytest.raises(ModelError, match=message):
        model(ids, **kwargs)


def test_more_images_than_placeholders_in_a_text_only_prompt() -> None:
    tokenizer, _, _, _, model = tiny_iaa(seed=72)
    with pytest.raises(ModelError, match=r"0 image placeholder\(s\) \(-200\) but 1 image"):
        model(torch.tensor([[5, 6, 7]]), pixel_values=torch.randn(1, 3, 32, 32), workflow="mm")


def test_cache_of_one_workflow_cannot_continue_another() -> None:
    _, _, _, _, model = tiny_iaa(seed=73)
    cache = DynamicCache()
    model(torch.tensor([[5, 6, 7]]), workflow="mm", cache=cache, use_cache=True)
    with pytest.raises(ModelError, match="filled by workflow='mm'; it cannot continue workflow='g'"):
        model(torch.tensor([[8]]), workflow="g", cache=cache, use_cache=True)


def test_unsupported_base_is_refused() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    _, _, clip, _ = tiny_parts(seed=74)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64))
    with pytest.raises(ModelError, match=r"cannot wrap base GPT2LMHeadModel \(model_type='gpt2'\)"):
        IAAForCausalLM.from_base(gpt2, clip, positions=[0])


@pytest.mark.parametrize("workflow", ["text", "mm"])
def test_static_cache_generation_equals_dynamic(workflow: str, fresh_seed: int) -> None:
    """``cache_implementation="static"`` (eager) gives the dynamic cache's token ids."""
    tokenizer, _, _, _, model = tiny_iaa(seed=fresh_seed)
    ids, pixels = two_prompts(torch.Generator().manual_seed(fresh_seed), len(tokenizer), workflow)
    kwargs = dict(pixel_values=pixels, workflow=workflow, max_new_tokens=8, eos_token_id=[])
    dynamic = model.generate(ids, **kwargs)
    assert torch.equal(model.generate(ids, cache_implementation="static", **kwargs), dynamic)
    assert not torch.equal(dynamic[0, -8:], dynamic[1, -8:])


def test_from_base_on_a_bf16_base_leaves_the_base_unchanged() -> None:
    tokenizer, base, clip, _ = tiny_parts(seed=63)
    base.model.layers.to(torch.bfloat16)  # bf16 weights, float32 RoPE buffer (as from_pretrained leaves it)
    base.model.embed_tokens.to(torch.bfloat16), base.model.norm.to(torch.bfloat16), base.lm_head.to(torch.bfloat16)
    ids = torch.randint(3, len(tokenizer), (1, 7), generator=torch.Generator().manual_seed(63))
    before = base(ids).logits
    model = IAAForCausalLM.from_base(base, clip, positions=[0])
    assert base.model.rotary_emb.inv_freq.dtype == torch.float32
    assert model.branch("mm").layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert torch.equal(base(ids).logits, before) and torch.equal(model(ids).logits, before.float())
    assert model(ids, workflow="mm").logits.dtype == torch.float32


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_other_llama_family_bases_work_through_the_same_code(family: str) -> None:
    from transformers import (
        CLIPVisionModel,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from tests.conftest import tiny_clip_config

    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=64, tie_word_embeddings=False)
    torch.manual_seed(77)
    if family == "qwen2":
        base = Qwen2ForCausalLM(Qwen2Config(**sizes)).eval()
    else:
        base = MistralForCausalLM(MistralConfig(**sizes, sliding_window=None)).eval()
    model = IAAForCausalLM.from_base(base, CLIPVisionModel(tiny_clip_config()).eval(), positions=[1]).eval()
    ids = torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(77))
    assert torch.equal(model(ids).logits, base(ids).logits)
    mm_ids = ids.clone()
    mm_ids[:, 2] = -200
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(78))
    kwargs = dict(pixel_values=pixels, workflow="mm", max_new_tokens=5, eos_token_id=[])
    assert torch.equal(model.generate(mm_ids, **kwargs), model.generate(mm_ids, use_cache=False, **kwargs))
