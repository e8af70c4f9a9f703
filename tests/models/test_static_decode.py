"""``--decode static``: greedy token ids equal the dynamic cache's, token for token, for every
adapter (hf, vlm on llava-hf with shared image heads, IAA's MM and G workflows), at batch 1 and in
left-padded batches of different prompt lengths, with and without images; a smaller batch padded
with filler rows into the cache a larger one made gives them too; and a compiled decode step gives
the same ids, compiled once per shape. On CPU the compile runs torch's ``eager``
backend (dynamo's whole-graph capture, the part that can break; CUDA graphs need CUDA, and
inductor is too slow for two shared cores): the GPU bench measures the real thing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from iaa_eval.errors import ModelError, NonFiniteOutput
from iaa_eval.models import generation, load_model
from iaa_eval.models import vlm as vlm_module
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.generation import StaticDecode, greedy_ids, static_decode
from iaa_eval.models.iaa import adapter as iaa_module
from iaa_eval.models.vlm_families import FAMILIES
from tests.conftest import save_tiny_llama, tiny_llama_config
from tests.iaa_helpers import tiny_iaa
from tests.models.conftest import record_new_tokens, record_prefills
from tests.models.test_vlm_shared_prefix import _mme_shaped, _sharpened
from tests.vlm_checkpoints import generation_blocker, save_family


def _adapter(kind: str, folder: Path, seed: int, decode: str = "dynamic") -> Any:
    """A tiny model of ``kind`` (``hf``, ``iaa``, ``iaa#g`` or a vlm family) on fresh random
    weights (redrawn large, so that rows' answers differ), batches of 6."""
    if kind == "hf":
        path = save_tiny_llama(folder, seed)
    elif kind.startswith("iaa"):
        tokenizer, _, _, processor, model = tiny_iaa(seed=seed)
        model.save_pretrained(folder, tokenizer=tokenizer, image_processor=processor)
        path = f"{folder}{kind[3:]}"
    else:
        path, kind = save_family(kind, folder, seed), "vlm"
    spec = ModelSpec("m", kind.partition("#")[0], str(path), batch_size=6, decode=decode)
    return _sharpened(load_model(spec), seed)


def _requests(seed: int, images: bool) -> list[MMRequest]:
    """Questions of different lengths: six on three images, two to three per image (a batch of
    them shares its heads), then two asked blind; without images, all blind."""
    asked = _mme_shaped(seed)
    if not images:
        asked = [MMRequest(r.prompt, max_new_tokens=r.max_new_tokens) for r in asked]
    blind = [MMRequest(f"Why is {word} the answer?", max_new_tokens=6) for word in ("it", "a b")]
    return [*asked, *blind]


def _answer(model: Any, requests: list[MMRequest], static: StaticDecode | None) -> None:
    """The whole list batched, then the first two requests one at a time (batch 1), then the
    batch again (a static cache reused)."""
    model.static = static
    model.generate(requests)
    for request in requests[:2]:
        model.generate([request])
    model.generate(requests)


def _record_answers(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Wrap :func:`greedy_ids` (as ``greedy_decode`` calls it): the list fills with each call's
    new token ids, the real rows' only (filler rows dropped)."""
    calls: list[torch.Tensor] = []
    real = generation.greedy_ids

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(generation, "greedy_ids", recording)
    return calls


KINDS = ["hf", "llava", "iaa", "iaa#g"]
# every other family, with images (Mistral 3's sliding-window layers caught a wrong head copy)
FAMILY_CASES = [(t, True) for t in FAMILIES if t != "llava" and not generation_blocker(t)]


@pytest.mark.parametrize(
    ("kind", "images"), [*((k, i) for k in KINDS for i in (True, False)), *FAMILY_CASES]
)
def test_static_decode_gives_the_dynamic_token_ids(
    kind: str, images: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    model = _adapter(kind, tmp_path / kind.replace("#", "_"), fresh_seed, decode="static")
    assert isinstance(model.static, StaticDecode)
    requests = _requests(fresh_seed, images)
    prefills = record_prefills(monkeypatch, iaa_module if kind.startswith("iaa") else vlm_module)
    tokens = _record_answers(monkeypatch)
    _answer(model, requests, model.static)
    calls = len(tokens)
    _answer(model, requests, None)
    static, dynamic = tokens[:calls], tokens[calls:]
    assert len(static) == len(dynamic) > 3
    for got, want in zip(static, dynamic, strict=True):
        assert torch.equal(got, want)
    if kind in KINDS:  # the rows' answers differ (some tiny families answer all alike)
        assert len({tuple(row.tolist()) for row in dynamic[0]}) > 1
    family = FAMILIES.get(kind)
    if images and kind != "hf" and not (family and (family.no_shared_prefix or
                                                    family.no_feature_cache)):
        assert prefills  # the shared heads were written into the static cache


def test_unknown_decode_is_refused(tiny_llama_dir: Path) -> None:
    with pytest.raises(ModelError, match="--decode 'fast': expected one of dynamic, static"):
        static_decode("fast", torch.nn.Linear(1, 1))
    assert load_model(ModelSpec("m", "hf", str(tiny_llama_dir))).static is None


def _counting_compile(static: StaticDecode, graphs: list[Any]) -> None:
    """Compile ``static``'s decode steps on any device with torch's eager backend, keeping every
    captured graph (the adapter's fullgraph and shape settings stay)."""

    def backend(graph: torch.fx.GraphModule, example_inputs: Any, **_: Any) -> Any:
        graphs.append(graph)
        return graph.forward

    static.compile_config = dataclasses.replace(static.compile_config, backend=backend)
    static.compile_config._compile_all_devices = True


@pytest.mark.parametrize("kind", ["hf", "llava", "iaa"])
def test_compiled_decode_step_gives_the_same_ids_and_compiles_once_per_shape(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    """The decode step traces as one graph (``fullgraph``, as each model declares), the cache is
    reused so a second batch of the same shape compiles nothing, and the ids equal the dynamic
    cache's, with and without images."""
    model = _adapter(kind, tmp_path, fresh_seed, decode="static")
    static = model.static
    assert static.compile_config.fullgraph and static.compile_config.dynamic is False
    graphs: list[Any] = []
    _counting_compile(static, graphs)
    torch._dynamo.reset()
    requests = [r for r in _requests(fresh_seed, images=kind != "hf") if r.image or kind == "hf"]
    tokens = _record_answers(monkeypatch)
    model.generate(requests)
    compiled, calls = len(graphs), len(tokens)
    model.generate(requests)
    assert compiled >= 1 and len(graphs) == compiled  # the same shapes: nothing recompiled
    model.static = None
    model.generate(requests)
    dynamic = tokens[2 * calls:]
    for got in (tokens[:calls], tokens[calls : 2 * calls]):
        assert all(torch.equal(a, b) for a, b in zip(got, dynamic, strict=True))


@pytest.mark.parametrize("workflow", ["text", "mm"])
def test_iaa_decode_step_compiles_whole_in_either_workflow(workflow: str, fresh_seed: int) -> None:
    """:class:`IAAForCausalLM` declares ``_can_compile_fullgraph``: its forward on a static cache
    traces without a break, the text workflow too; ids equal the dynamic cache's."""
    from tests.models.iaa.test_modeling import two_prompts

    tokenizer, _, _, _, model = tiny_iaa(seed=fresh_seed)
    assert model._can_compile_fullgraph
    ids, pixels = two_prompts(torch.Generator().manual_seed(fresh_seed), len(tokenizer), workflow)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def run(**kwargs: Any) -> torch.Tensor:
        return model.generate(workflow=workflow, pixel_values=pixels, **kwargs)

    static, graphs = StaticDecode(model), []
    _counting_compile(static, graphs)
    torch._dynamo.reset()
    dynamic = greedy_ids(run, batch, 8, [], 0)
    assert torch.equal(greedy_ids(run, batch, 8, [], 0, static=static), dynamic)
    assert len(graphs) == 1
    assert not torch.equal(dynamic[0], dynamic[1])


def test_static_decode_stops_on_logits_that_turn_nan_in_a_decode_step(
    tiny_llama_dir: Path,
) -> None:
    """The NaN check leaves the forward (no hook inside a compiled step) but still sees every
    step: logits that turn NaN after the prefill raise."""
    model = load_model(ModelSpec("m", "hf", str(tiny_llama_dir), decode="static"))

    def poison(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output * float("nan") if args[0].shape[1] == 1 else output

    model.model.lm_head.register_forward_hook(poison)
    with pytest.raises(NonFiniteOutput, match="logits are NaN"):
        model.generate([MMRequest("Why?", max_new_tokens=4)])


def test_decode_flag_reaches_every_model_spec(tiny_llama_dir: Path) -> None:
    from iaa_eval.cli import build_parser
    from iaa_eval.runplan import RunChoices, plan_run

    args = build_parser().parse_args(["run", "--tasks", "mmlu", "--decode", "static"])
    assert args.decode == "static"
    assert build_parser().parse_args(["run", "--tasks", "mmlu"]).decode == "dynamic"
    config = plan_run(RunChoices(models=(f"base=hf:{tiny_llama_dir}",), tasks="mmlu",
                                 decode=args.decode))
    assert [m.decode for m in config.models] == ["static"]


# a vlm family with shared heads, one with M-RoPE and image grids, one with per-token
# token_type_ids, one with pixels per row ((batch, images, ...)): fillers show no image
PADDED_KINDS = [("hf", False), ("llava", False), ("iaa", False), ("iaa", True),
                *((t, False) for t in ("qwen2_vl", "gemma3", "idefics3")
                  if not generation_blocker(t))]


@pytest.mark.parametrize(("kind", "blind"), PADDED_KINDS)
def test_a_smaller_batch_reuses_the_static_cache_with_filler_rows(
    kind: str, blind: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    """A batch of 6 then one of 4 (two images shared by two questions each, so a shared head is
    copied into the padded cache; ``blind``: three asked of images and one blind, IAA's mixed
    batch) on the same :class:`StaticDecode`: the second is padded to the first's cache (the
    same object, 6 rows run), a third of 2 rows gets a cache of its own; every answer equals
    the dynamic cache's."""
    model = _adapter(kind, tmp_path / kind, fresh_seed, decode="static")
    static = model.static
    big = _mme_shaped(fresh_seed)
    small = _mme_shaped(fresh_seed + 1)[: 3 if blind else 4]
    if blind:
        small.append(MMRequest("Why is it the answer?", max_new_tokens=6))
    batches = (big, small, small[:2])
    answers = _record_answers(monkeypatch)
    prefills = record_prefills(monkeypatch, iaa_module if kind == "iaa" else vlm_module)
    generated = record_new_tokens(monkeypatch, model.model)
    model.generate(big)
    cache, shape = static.cache, static.shape
    heads = len(prefills)
    model.generate(small)
    assert static.cache is cache and static.shape == shape == (6, StaticDecode.bucket)
    assert generated[-1].shape[0] == 6 and answers[-1].shape[0] == len(small)
    if kind in ("llava", "iaa") and not blind:
        assert len(prefills) > heads  # the shared heads went into the padded cache
    model.generate(small[:2])
    assert static.cache is not cache and static.shape[0] == 2  # 2 of 6 rows: not padded
    padded = answers[:]
    model.static = None
    for batch in batches:
        model.generate(batch)
    dynamic = answers[len(padded):]
    assert len(padded) == len(dynamic) == 3
    for got, want in zip(padded, dynamic, strict=True):
        assert torch.equal(got, want)
    if kind in KINDS:  # the rows' answers differ (some tiny families answer all alike)
        assert len({tuple(row.tolist()) for row in dynamic[1]}) > 1


def _random_batch(gen: torch.Generator, rows: int, width: int, vocab: int) -> dict[str, Any]:
    """Random ids, left-padded to ``width`` at random lengths (one row full)."""
    lengths = torch.randint(1, width + 1, (rows,), generator=gen)
    lengths[torch.randint(rows, (1,), generator=gen)] = width
    ids = torch.randint(1, vocab, (rows, width), generator=gen)
    mask = (torch.arange(width) >= width - lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def test_the_cache_is_reused_while_the_batch_fills_half_of_it_and_fillers_stop_at_once(
    fresh_seed: int,
) -> None:
    """Through :func:`greedy_ids` on a tiny Llama, decode step compiled (eager backend), lengths
    bucketed by 4: 6 rows of 20 + 8 tokens make a cache of 6 x 28 slots; 5 rows of 12 + 8 (fewer
    rows and a shorter bucket: 100 slots, over half) reuse it and compile nothing new; 2 rows of
    12 + 8 (40 slots, under half) get their own. EOS: a token of each row's answer (of an
    EOS-less run) that a filler row (row 0's last token alone) does not answer, so rows stop
    early and fillers only by :class:`FillerRowsDone`: the ids have the dynamic cache's width,
    and every id equals the dynamic cache's."""
    from transformers import LlamaForCausalLM

    vocab = 512
    model = LlamaForCausalLM(tiny_llama_config(vocab)).eval()
    gen = torch.Generator().manual_seed(fresh_seed)
    with torch.no_grad():  # redrawn large, so that rows' answers differ
        for weight in model.parameters():
            weight.copy_(torch.randn(weight.shape, generator=gen) * 0.6)
    static, graphs = StaticDecode(model), []
    static.bucket = 4
    _counting_compile(static, graphs)
    torch._dynamo.reset()
    shapes, early = [], 0
    for rows, width in ((6, 20), (5, 12), (2, 12)):
        batch = _random_batch(gen, rows, width, vocab)
        free = greedy_ids(model.generate, batch, 8, [], 0)
        last = batch["input_ids"][:1, -1:]
        filler = greedy_ids(model.generate, {"input_ids": last, "attention_mask": last * 0 + 1},
                            8, [], 0)
        # each row's first answer token past its first that the filler does not answer
        eos = sorted({next((t for t in row[1:] if t not in filler[0].tolist()), 1)
                      for row in free.tolist()})
        dynamic = greedy_ids(model.generate, batch, 8, eos, 0)
        early += dynamic.shape[1] < 8
        compiled = len(graphs)
        got = greedy_ids(model.generate, batch, 8, eos, 0, static=static)
        assert torch.equal(got, dynamic)
        shapes.append((static.cache, static.shape, len(graphs) - compiled))
    assert early  # some batch stopped before its last token
    (first, made, _), (second, kept, recompiled), (third, own, _) = shapes
    assert second is first and kept == made == (6, 28) and recompiled == 0
    assert third is not first and own == (2, 20)


def test_out_of_memory_drops_the_static_cache(fresh_seed: int) -> None:
    """An out-of-memory error while decoding drops the cache: the batcher's halved retry fills
    half of it and would otherwise be padded back up to the size that did not fit."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config(64)).eval()
    static = StaticDecode(model)
    batch = _random_batch(torch.Generator().manual_seed(fresh_seed), 4, 6, 64)
    greedy_ids(model.generate, batch, 2, [], 0, static=static)
    assert static.shape == (4, StaticDecode.bucket)

    def out_of_memory(**kwargs: Any) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        greedy_ids(out_of_memory, batch, 2, [], 0, static=static)
    assert static.cache is None and static.shape is None
    half = {k: v[:2] for k, v in batch.items()}
    greedy_ids(model.generate, half, 2, [], 0, static=static)
    assert static.shape == (2, StaticDecode.bucket)
