"""Batched greedy decoding with left padding, shared by the adapters, and the shared-image prefill:
questions of one image share their prompt's head (system prompt, image, common words), which is
run once per image; its KV cache is copied to each question and ``generate`` continues from it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.profiler import record_function
from transformers import (
    CompileConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
)

from iaa_eval.errors import ModelError, NonFiniteOutput

log = logging.getLogger(__name__)
DECODES = ("dynamic", "static")


def require_finite(logits: torch.Tensor) -> None:
    """Raise :class:`NonFiniteOutput` on NaN or infinite logits. Greedy argmax over NaN or ties of
    inf silently picks token 0, so a broken model would otherwise answer plausible garbage (an
    overflowing head made every MME answer "", scored as wrong)."""
    if not torch.isfinite(logits).all():
        kind = "NaN" if torch.isnan(logits).any() else "infinite"
        raise NonFiniteOutput(f"the model's logits are {kind} (shape {tuple(logits.shape)}); "
                              "expected finite logits")


def check_logits(module: torch.nn.Module, args: Any, output: Any) -> None:
    """Forward hook: :func:`require_finite` on the logits a forward returns."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        require_finite(logits)


class FiniteScores(LogitsProcessor):
    """:func:`require_finite` on each step's next-token logits, between ``generate``'s forwards:
    a compiled decode step cannot hold a forward hook's data-dependent check."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        require_finite(scores)
        return scores


@contextlib.contextmanager
def nan_guard(model: torch.nn.Module | None) -> Iterator[None]:
    """:func:`check_logits` on ``model``'s forwards while the block runs."""
    handle = model.register_forward_hook(check_logits) if model is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def greedy_ids(
    generate: Callable[..., torch.Tensor],
    batch_inputs: dict[str, Any],
    max_new_tokens: int,
    eos_token_ids: int | Sequence[int] | None,
    pad_token_id: int | None,
    watch: torch.nn.Module | None = None,
    static: StaticDecode | None = None,
) -> torch.Tensor:
    """``generate(**batch_inputs)`` greedily; the new token ids ``(batch, max_new_tokens or less)``.

    ``batch_inputs`` must be left-padded so every row's new tokens start at the same column.
    ``watch``: the module whose forwards ``generate`` runs; NaN or infinite logits there raise
    :class:`~iaa_eval.errors.NonFiniteOutput` instead of decoding into garbage. ``static``: decode
    on its static KV cache (``--decode static``), else on transformers' dynamic one; its NaN check
    then runs on each step's scores (:class:`FiniteScores`), outside the compiled forward.
    """
    rows, prompt_len = batch_inputs["input_ids"].shape
    hooked = watch if static is None else None
    with torch.inference_mode(), nan_guard(hooked), record_function("iaa_eval.generate"):
        if static is not None:
            batch_inputs = static.inputs(batch_inputs, prompt_len + max_new_tokens)
            if watch is not None:
                batch_inputs["logits_processor"] = LogitsProcessorList([FiniteScores()])
        try:
            output = generate(
                **batch_inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos_token_ids,
                pad_token_id=pad_token_id,
            )
        except torch.OutOfMemoryError:
            if static is not None:  # the batcher retries smaller: not padded back up to this size
                static.release()
            raise
    return output[:rows, prompt_len:]  # without the static cache's filler rows


def greedy_decode(
    generate: Callable[..., torch.Tensor],
    tokenizer: Any,
    batch_inputs: dict[str, Any],
    max_new_tokens: int,
    eos_token_ids: Sequence[int] | None = None,
    watch: torch.nn.Module | None = None,
    static: StaticDecode | None = None,
) -> list[str]:
    """:func:`greedy_ids` decoded to text, special tokens stripped (EOS: the tokenizer's unless
    ``eos_token_ids`` are given)."""
    eos = list(eos_token_ids) if eos_token_ids else tokenizer.eos_token_id
    new_tokens = greedy_ids(generate, batch_inputs, max_new_tokens, eos, tokenizer.pad_token_id,
                            watch, static)
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def static_decode(decode: str, model: torch.nn.Module) -> StaticDecode | None:
    """What ``--decode`` asks of ``model``'s generation: a :class:`StaticDecode`, or ``None``."""
    if decode not in DECODES:
        raise ModelError(f"--decode {decode!r}: expected one of {', '.join(DECODES)}")
    return StaticDecode(model) if decode == "static" else None


class FillerRowsDone(StoppingCriteria):
    """Rows from ``rows`` on are :class:`StaticDecode`'s filler: finished from their first token,
    so ``generate`` stops when the real rows do, as it would without them."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done[self.rows:] = True
        return done


def with_filler_rows(batch_inputs: dict[str, Any], fill: int) -> dict[str, Any]:
    """``batch_inputs`` with ``fill`` filler rows below the real ones, each a one-token question:
    row 0's last column (its last prompt token, of text type), the rest of the row masked. No row is
    all padding (a fully masked row may give NaN logits), and a filler shows no image, so what
    describes images (pixels, sizes, grids, features: one per image, not per row) is passed as is;
    only per-token tensors (``(rows, width, ...)``, as ``input_ids``) get rows."""
    ids = batch_inputs["input_ids"]
    out = dict(batch_inputs)
    for key, value in batch_inputs.items():
        if isinstance(value, torch.Tensor) and value.shape[:2] == ids.shape:
            filler = value[:1, -1:].expand(fill, ids.shape[1], *value.shape[2:])
            if key == "attention_mask":
                filler = torch.zeros_like(filler)
                filler[:, -1] = 1
            out[key] = torch.cat([value, filler])
    return out


class StaticDecode:
    """``--decode static``: greedy decoding on a static KV cache, its decode step compiled by
    transformers' ``generate`` on CUDA (``torch.compile`` with CUDA graphs: ``reduce-overhead``).

    One cache per model, reused across calls while it fits (:meth:`fits`), so the captured graphs
    replay on the same addresses instead of being recorded again; lengths are rounded up to
    :attr:`bucket` tokens so ``torch.compile`` sees few shapes. A batch with fewer rows than the
    cache is padded with filler rows (:func:`with_filler_rows`) whose answers are dropped: a task's
    last, smaller batch, or one the batcher re-sized, would otherwise compile again (tens of
    seconds for an 8B model on a GPU). A prompt whose head was prefilled once per image
    (:func:`prefill_shared`, a dynamic cache) is copied into it. Elsewhere than on CUDA it runs
    eagerly (``compile_config._compile_all_devices`` forces the compile, as the tests do on CPU
    with a cheap backend).
    """

    bucket = 256

    def __init__(self, model: torch.nn.Module) -> None:
        self.config, self.device = model.config, model.device
        # every (model, batch, length) compiles one entry on torch.nn.Module.__call__'s code,
        # shared by all models: dynamo's default limit of 8 would fall back to eager unsaid
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
        self.compile_config = CompileConfig(
            fullgraph=getattr(model, "_can_compile_fullgraph", False), dynamic=False,
            mode="reduce-overhead",
        )
        self.cache: StaticCache | None = None
        self.shape: tuple[int, int] | None = None  # the cache's (rows, max length)

    def fits(self, rows: int, size: int) -> bool:
        """Whether ``rows`` rows of ``size`` (bucketed) tokens reuse the cache: it is as large in
        both and they fill at least half its slots. Half bounds the waste: filler rows cost as much
        prefill as real ones and all slots are read at every step, so a 1-row remainder padded to
        256 rows would cost 256 times its own work; at least half full, the filler costs at most
        what the batch does, against a compile of tens of seconds saved. A batch the batcher
        halved after an out-of-memory error would fill half: :meth:`release` drops the cache
        there, so it is not padded back up to the size that did not fit."""
        if self.shape is None:
            return False
        cache_rows, cache_len = self.shape
        fewer = rows <= cache_rows and size <= cache_len
        return fewer and 2 * rows * size >= cache_rows * cache_len

    def release(self) -> None:
        """Drop the cache and its memory (after an out-of-memory error): the next batch makes
        its own."""
        self.cache = self.shape = None

    def _fresh_cache(self, rows: int, length: int) -> StaticCache:
        size = -(-length // self.bucket) * self.bucket
        if self.fits(rows, size):
            self.cache.reset()
        else:
            self.cache = StaticCache(config=self.config, max_cache_len=size)
            self.shape = (rows, size)
        return self.cache

    def inputs(self, batch_inputs: dict[str, Any], length: int) -> dict[str, Any]:
        """``batch_inputs`` for ``generate`` on the static cache, sized for ``length`` tokens,
        padded to its rows with filler rows that stop at once (:class:`FillerRowsDone`)."""
        rows = batch_inputs["input_ids"].shape[0]
        cache = self._fresh_cache(rows, length)
        fill = self.shape[0] - rows
        prefilled = batch_inputs.get("cache")
        if prefilled is not None:  # the shared heads' K/V, written in as their prefill would;
            # the fillers' rows zero, masked out by their masks
            for static, dynamic in zip(cache.layers, prefilled.layers, strict=True):
                keys, values = dynamic.keys, dynamic.values
                if fill:  # else no copy beyond the one into the static cache
                    keys, values = (torch.cat([t, t.new_zeros(fill, *t.shape[1:])])
                                    for t in (keys, values))
                static.update(keys, values)
        compiles = self.device.type == "cuda" or self.compile_config._compile_all_devices
        out = {**batch_inputs, "cache": cache,
               "compile_config": self.compile_config if compiles else None}
        if fill:
            out = {**with_filler_rows(out, fill),
                   "stopping_criteria": StoppingCriteriaList([FillerRowsDone(rows)])}
        return out


def ensure_pad_token(tokenizer: Any) -> None:
    """Left padding for generation needs a pad token; fall back to EOS as most causal LMs do. A
    tokenizer with neither cannot pad a batch, nor say where an answer ends: refused at load."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"tokenizer {tokenizer.name_or_path!r}: has neither a pad token nor an EOS token, "
                "so answers cannot be batched or ended; set pad_token or eos_token in its "
                "tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def left_pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Stack variable-length id lists into ``(batch, max_len)``, padding on the left."""
    width = max(len(r) for r in rows)
    return torch.tensor([[value] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)


def left_padded(
    rows: Sequence[Sequence[int]], pad: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``rows`` left-padded to one width, on ``device``."""
    return {"input_ids": left_pad(rows, pad).to(device),
            "attention_mask": left_pad([[1] * len(r) for r in rows], 0).to(device)}


def collate(rows: Sequence[dict[str, torch.Tensor]], pad: int) -> dict[str, torch.Tensor]:
    """One left-padded batch from one-row processor outputs: per-token tensors (``(1, length)``,
    as ``input_ids``) padded on the left (``input_ids`` with ``pad``, the rest with 0), anything
    else (``image_sizes``, ``image_grid_thw``) stacked along the first dimension as the
    processor's batch call does."""
    batch: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        per_token = all(v.shape == row["input_ids"].shape for v, row in zip(values, rows,
                                                                               strict=True))
        if per_token:
            fill = pad if key == "input_ids" else 0
            batch[key] = left_pad([v[0].tolist() for v in values], fill).to(values[0].dtype)
        else:
            batch[key] = torch.cat(values)
    return batch


def prefill_rows(keys: Sequence[Any]) -> tuple[list[int], list[int]]:
    """For a prefix shared per key: the row that stands for each key in the prefill (its first), and
    for every row the prefill row its cache is copied from."""
    first: dict[Any, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    slot = {key: n for n, key in enumerate(first)}
    return list(first.values()), [slot[key] for key in keys]


def shared_prefix_lengths(rows: Sequence[Sequence[int]], keys: Sequence[Any],
                          covers: Sequence[int]) -> dict[Any, int] | None:
    """The head length each key (image) shares among its rows, or ``None`` when sharing saves
    nothing (no key has two rows) or cannot hold (a row without a key).

    A key's length is its rows' common prefix, leaves every row at least one token of its own
    (``generate`` needs one to start from) and reaches past each row's ``covers[i]`` (its image
    tokens: a question's own tokens must not need the image). A key asked once shares its whole
    prompt but the last token, so every image is consumed by the prefill. Keys may differ in
    length: anyres images (LLaVA-NeXT) each have their own token count.
    """
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    if None in groups or all(len(members) < 2 for members in groups.values()):
        return None
    lengths = {}
    for key, members in groups.items():
        first = rows[members[0]]
        longest = min(len(rows[i]) for i in members) - 1
        for i in members[1:]:
            same = next((j for j, (a, b) in enumerate(zip(first, rows[i], strict=False))
                         if a != b), longest)
            longest = min(longest, same)
        if longest <= 0 or longest < max(covers[i] for i in members):
            return None
        lengths[key] = longest
    return lengths


def prefill_shared(model: torch.nn.Module, rows: Sequence[Sequence[int]], keys: Sequence[Any],
                   lengths: dict[Any, int], pad: int,
                   head_inputs: Callable[[list[int]], dict[str, Any]]) -> dict[str, Any]:
    """``generate`` inputs whose heads (``lengths[key]`` tokens of each row) are in the cache.

    The head of the first row of each key (image) is run once, with ``head_inputs(firsts)`` (the
    images of those rows, the workflow...), heads of different lengths left-padded with positions
    counted from their first real token; the K/V are copied to every row of that key. Each row
    keeps its whole ids (``generate`` feeds only those past the cache); its own tokens follow
    its head after masked padding, so positions, derived from the mask, continue from the head.
    """
    firsts, order = prefill_rows(keys)
    device = model.device
    heads = left_padded([rows[i][: lengths[keys[i]]] for i in firsts], pad, device)
    positions = (heads["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode(), nan_guard(model), record_function("iaa_eval.prefill_shared"):
        # logits of the last position only: the head's logits are never read (full ones were
        # ~45 GB for 256 LLaVA heads on an 8B model)
        out = model(**heads, position_ids=positions, use_cache=True, logits_to_keep=1,
                    **head_inputs(firsts))
    index = torch.tensor(order, device=device)
    out.cache.reorder_cache(index)
    own = left_padded([row[lengths[key]:] for row, key in zip(rows, keys, strict=True)], pad,
                      device)
    return {"input_ids": torch.cat([heads["input_ids"][index], own["input_ids"]], dim=1),
            "attention_mask": torch.cat([heads["attention_mask"][index], own["attention_mask"]],
                                        dim=1),
            "cache": out.cache}
