"""Any bridge-style VLM (``AutoModelForImageTextToText``): ``--model NAME=vlm:<hub id or dir>``.

Multimodal tasks run the whole model through its own processor (anyres tiles, Qwen-VL's
``image_grid_thw``, Idefics3 crops, Gemma 3's image tokens: the processor expands the
placeholder, never this module). Text tasks run
:class:`~iaa_eval.models.vlm_text.DecoderLM`, the VLM's own decoder and head found through
``get_decoder()`` / ``get_output_embeddings()``, which on text-only input computes what the
whole VLM computes (tested per family): that is where forgetting shows.

Each distinct image is encoded once per model per run (``feature_cache``; MME asks two questions
per image, MMBench one per option rotation): the vision tower's output goes back to the model as
``mm_encoder_outputs``, transformers' entry point for pre-encoded features, while the processor
still expands the prompt (token counts, grids, ``image_sizes``), so the language model sees what
the pixel path gives it (tested per family). Off where that does not hold, with the reason
(:attr:`~iaa_eval.models.vlm_families.VLMFamily.no_feature_cache`). The images a batch lacks are
encoded together: rows whose pixel inputs have one shape apart from dim 0 are concatenated into
one processor-style batch (:func:`encode_groups`), one ``get_image_features`` call each, the
result split back into each image's features as a one-image call gives them (tested per
family); one image a call where that split is not certain
(:attr:`~iaa_eval.models.vlm_families.VLMFamily.no_batched_encode`).

Questions of one image in a batch also share their prompt's head (system prompt, image tokens,
common words): it is run once per image (:func:`~iaa_eval.models.generation.prefill_shared`) and
its K/V copied to each question, whose own tokens follow. That holds where the head's K/V depend
on its tokens and image alone and a question's positions continue from the head's length (tested
per family); off where not, with the reason
(:attr:`~iaa_eval.models.vlm_families.VLMFamily.no_shared_prefix`: Qwen-VL's M-RoPE, Gemma 3's
bidirectional image mask), and for a batch that would reach a sliding window.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import record_function
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    BatchFeature,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from iaa_eval.errors import ModelError
from iaa_eval.models.base import (
    MMRequest,
    ModelSpec,
    TextView,
    fingerprint_weights,
    resident_tensors,
    text_model_fingerprint,
)
from iaa_eval.models.batching import GenerationBatcher
from iaa_eval.models.generation import (
    collate,
    ensure_pad_token,
    greedy_decode,
    prefill_shared,
    shared_prefix_lengths,
    static_decode,
)
from iaa_eval.models.loading import (
    check_vocabulary,
    load_pretrained,
    load_weights,
    resolve_dtype,
)
from iaa_eval.models.placement import dtype_device, placed, placement_kwargs
from iaa_eval.models.vision import FeatureCache, OncePerImage, image_key, pil_image_processor
from iaa_eval.models.vlm_families import VLMFamily, require_family
from iaa_eval.models.vlm_processor import build_processor, render_prompt
from iaa_eval.models.vlm_text import DecoderLM

log = logging.getLogger(__name__)
# processor outputs that only the vision tower reads: replaced by cached features
PIXEL_INPUTS = ("pixel_values", "pixel_attention_mask")
# processor outputs that describe the prompt, not the image: never passed to the vision tower
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
# device memory the feature cache may hold: an anyres 8B model's image is ~25 MB of features, so a
# count limit alone (FeatureCache's 2048) could take tens of GB
FEATURE_CACHE_BYTES = 2 << 30
# images per vision-tower call: a batch-1 call is launch-bound on a GPU (an eager CLIP
# ViT-L/14-336: several ms), so 32 cuts VQAv2's 256 calls per batch to 8, while the activations
# stay modest: transformers keeps only the hidden states a family selects, and 32 images of 5
# anyres tiles of 577 tokens make ~1.7 GB of eager fp16 attention scores per layer
IMAGES_PER_ENCODE = 32


@dataclass
class Prepared:
    """A batch as the host prepared it: the requests, the processor's batch inputs (on the host)
    and, where the model will get cached features, each prompt's own inputs (pixels included)
    for encoding the images the cache lacks."""

    requests: Sequence[MMRequest]
    enc: dict[str, Any]
    rows: list[dict[str, Any]]
    keys: list[str]


def sliding_window(config: Any) -> int | None:
    """The text model's attention window where a layer has one (``layer_types``, or a
    ``sliding_window`` alone, as Mistral's), else ``None``."""
    window = getattr(config, "sliding_window", None)
    layers = getattr(config, "layer_types", None)
    if window is None or (layers is not None and "sliding_attention" not in layers):
        return None
    return window


def encode_groups(inputs: Sequence[dict[str, Any]], limit: int) -> list[list[int]]:
    """Indices of ``inputs`` (each image's pixel inputs) in groups that concatenate along dim 0
    into one processor-style batch: the same keys, each a tensor of one shape apart from dim 0
    (Qwen-VL's flattened patches and ``image_grid_thw`` concatenate so by design), at most
    ``limit`` a group, groups in order of their first image. An input holding anything else
    (a scalar, a list) is a group alone."""
    open_groups: dict[Any, list[int]] = {}
    groups: list[list[int]] = []
    for i, enc in enumerate(inputs):
        if all(isinstance(v, torch.Tensor) and v.dim() for v in enc.values()):
            shape: Any = tuple((k, v.shape[1:], v.dtype) for k, v in sorted(enc.items()))
        else:
            shape = i
        group = open_groups.get(shape)
        if group is None or len(group) >= limit:
            group = open_groups[shape] = []
            groups.append(group)
        group.append(i)
    return groups


class VLMModel:
    """Adapter for ``--model NAME=vlm:<hub id or dir>`` (and ``llava:``, its alias): every family
    in :mod:`~iaa_eval.models.vlm_families`."""

    supports_images = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        remote = spec.trust_remote_code
        config = load_pretrained(
            AutoConfig.from_pretrained, spec.path, "config", trust_remote_code=remote
        )
        self.family: VLMFamily = require_family(config.model_type, spec.path)
        self.processor = build_processor(spec.path, config.model_type, remote)
        model = load_weights(
            AutoModelForImageTextToText.from_pretrained,
            spec.path,
            "model",
            dtype=resolve_dtype(spec.dtype, dtype_device(spec)),
            trust_remote_code=remote,
            **placement_kwargs(spec),
        )
        self.model = placed(model, spec)
        self._setup()

    @classmethod
    def from_model(cls, spec: ModelSpec, model: PreTrainedModel, processor: Any) -> VLMModel:
        """The adapter around a model and processor built in memory (the GPU benchmarks' random
        weights of real shapes), placed where they are."""
        adapter = cls.__new__(cls)
        adapter.spec, adapter.model, adapter.processor = spec, model.eval(), processor
        adapter.family = require_family(model.config.model_type, spec.path)
        adapter._setup()
        return adapter

    def _setup(self) -> None:
        """What follows from the model and processor: tokenizer, text view, caches, batching."""
        spec = self.spec
        self.tokenizer = self.processor.tokenizer
        check_vocabulary(
            self.tokenizer, self.model.get_input_embeddings().num_embeddings, spec.path
        )
        ensure_pad_token(self.tokenizer)
        self._text_lm = DecoderLM(self.model).eval()
        self._fingerprints: dict[str, str] = {}
        self.batcher = GenerationBatcher(spec.batch_size, self.model)
        self.static = static_decode(spec.decode, self.model)
        self.feature_cache = (
            None if self.family.no_feature_cache else FeatureCache(self._encode_images)
        )
        self.processor.image_processor = pil_image_processor(self.processor.image_processor)
        # the prepare thread's copy (tokenizers are not shared across threads); it processes
        # each image once per batch
        self._host = copy.deepcopy(self.processor)
        self._host.image_processor = OncePerImage(self._host.image_processor)
        self._pooled_list = True  # how the model returns (and takes back) features: list or tensor
        self.share_prefixes = True  # off: every question's whole prompt is run (the reference path)
        for part, reason in (
            ("vision-feature cache", self.family.no_feature_cache),
            ("shared image prefix", self.family.no_shared_prefix),
            ("batched image encoding", self.family.no_batched_encode),
        ):
            if reason:
                log.info("%s (%s): %s off: %s", spec.path, self.family.label, part, reason)

    def text_view(self) -> TextView:
        """The VLM's decoder and head, without the vision tower and projector."""
        return TextView(self._text_lm, self.tokenizer, self.fingerprint("text"))

    def render_prompt(self, request: MMRequest) -> str:
        """The exact text the model is given for a request, image placeholder unexpanded."""
        return render_prompt(
            self._host, request.prompt, request.image is not None, self.family.system_prompt
        )

    def _encode(self, texts: Sequence[str], images: Sequence[Any]) -> dict[str, torch.Tensor]:
        """The processor's inputs for a batch (left-padded), on the host; images nested one list
        per prompt (a request has at most one), as every family's processor takes them."""
        pictures = [[image.convert("RGB")] for image in images] or None
        enc = self._host(images=pictures, text=list(texts), return_tensors="pt", padding=True)
        return dict(enc)

    def _encode_rows(self, texts: Sequence[str], images: Sequence[Any]) -> list[dict[str, Any]]:
        """The processor's inputs prompt by prompt, each image processed once (rows that share an
        image object share its pixels)."""
        host = self._host
        rgb = {id(image): image.convert("RGB") for image in images}
        try:
            return [dict(host(images=[[rgb[id(image)]]], text=[text], return_tensors="pt"))
                    for text, image in zip(texts, images, strict=True)]
        finally:
            host.image_processor.forget()

    def _to_device(self, enc: dict[str, Any]) -> dict[str, Any]:
        """``enc`` on the model's device, floating tensors in its dtype."""
        return dict(BatchFeature(enc).to(self.model.device, dtype=self.model.dtype))

    def _encode_images(self, rows: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Each image's features as the model's ``get_image_features`` returns them for that image
        alone, from the pixel inputs of a prompt that shows it: up to :data:`IMAGES_PER_ENCODE`
        images of one shape a call (batch-1 calls are launch-bound on a GPU), one a call where
        the family's split is not certain."""
        encoder = self.model.base_model.get_image_features
        accepted = set(inspect.signature(encoder).parameters) - set(TEXT_INPUTS)
        inputs = [{k: v for k, v in row.items() if k in accepted} for row in rows]
        limit = 1 if self.family.no_batched_encode else IMAGES_PER_ENCODE
        features: dict[int, torch.Tensor] = {}
        for group in encode_groups(inputs, limit):
            members = [inputs[i] for i in group]
            batch = members[0] if len(group) == 1 else {
                k: torch.cat([m[k] for m in members]) for k in members[0]}
            with torch.inference_mode():
                out = encoder(**self._to_device(batch), return_dict=True)
            features.update(zip(group, self._per_image(out.pooler_output, members), strict=True))
        encoded = [features[i] for i in range(len(rows))]
        largest = max(f.numel() * f.element_size() for f in encoded)
        cache = self.feature_cache
        cache.max_items = max(8, min(cache.max_items, FEATURE_CACHE_BYTES // largest))
        return encoded

    def _per_image(self, pooled: Any, members: Sequence[dict[str, Any]]) -> list[torch.Tensor]:
        """One call's ``pooler_output`` split back per image, as a one-image call gives it: a
        list or tuple holds one entry per image; a tensor (Gemma 3, InternVL, DeepSeek-VL) one
        entry per row of ``pixel_values`` (a crop or tile: their towers and projectors map rows
        to rows), an image's entries squeezed where it has one. Any other count is refused, not
        guessed (a family returning one would need ``no_batched_encode``)."""
        self._pooled_list = isinstance(pooled, (list, tuple))
        if self._pooled_list:
            parts = list(pooled)
        else:
            counts = ([pooled.shape[0]] if len(members) == 1
                      else [m["pixel_values"].shape[0] for m in members])
            parts = list(pooled.split(counts)) if sum(counts) == pooled.shape[0] else []
            parts = [p[0] if p.shape[0] == 1 else p for p in parts]
        if len(parts) != len(members):
            raise ModelError(
                f"vlm {self.spec.path!r}: get_image_features gave {len(pooled)} entries for "
                f"{len(members)} images; the adapter takes one per image, or per pixel_values row"
            )
        return parts

    def _features_input(self, features: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Images' cached features as the model takes them back (``mm_encoder_outputs``)."""
        pooled: Any = list(features)
        if not self._pooled_list:  # a tensor of all images' tokens (or tiles) back to back
            pooled = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=pooled)}}

    def _with_shared_heads(
        self,
        rows: list[list[int]],
        keys: Sequence[str],
        features: Sequence[torch.Tensor],
        budget: int,
    ) -> dict[str, Any] | None:
        """``generate`` inputs in which the head the questions of each image share (up to at least
        its image tokens) has been run once, its K/V copied to each question; ``None`` where that
        does not hold (see the module docstring) or saves nothing. ``rows``: each prompt's ids,
        unpadded."""
        if not self.share_prefixes or self.family.no_shared_prefix:
            return None
        image = self.model.config.image_token_id
        covers = [max(j for j, token in enumerate(row) if token == image) + 1 for row in rows]
        lengths = shared_prefix_lengths(rows, keys, covers)
        if lengths is None:
            return None
        window = sliding_window(self.model.config.get_text_config())
        width = max(lengths.values()) + max(len(r) - lengths[k] for r, k in zip(rows, keys,
                                                                                   strict=True))
        if window is not None and width + budget >= window:
            return None  # the window would count the padding around a shared head as positions
        return prefill_shared(
            self.model,
            rows,
            keys,
            lengths,
            self.tokenizer.pad_token_id,
            lambda firsts: self._features_input([features[i] for i in firsts]),
        )

    def _prepare(self, chunk: Sequence[MMRequest], with_features: bool) -> Prepared:
        """The host's part of a batch: prompts rendered and encoded. ``with_features``: prompt by
        prompt, pixels kept per row for the images the feature cache lacks, and the batch
        collated without them (the model gets cached features instead)."""
        texts = [self.render_prompt(r) for r in chunk]
        images = [r.image for r in chunk if r.image is not None]
        if not with_features:
            return Prepared(chunk, self._encode(texts, images), [], [])
        rows = self._encode_rows(texts, images)
        batch = collate([{k: v for k, v in row.items() if k not in PIXEL_INPUTS} for row in rows],
                        self.tokenizer.pad_token_id)
        return Prepared(chunk, batch, rows, [r.image_key or image_key(r.image) for r in chunk])

    def _answer(self, prepared: Prepared) -> list[str]:
        """Greedy answers to a prepared batch: cached features (and a shared head per image)
        where the batch was prepared for them, else the processor's pixels."""
        reqs = prepared.requests
        budget = max(r.max_new_tokens for r in reqs)
        self.batcher.fit(len(reqs), prepared.enc["input_ids"].shape[1] + budget)
        if prepared.rows:
            with record_function("iaa_eval.encode_images"):
                features = self.feature_cache.get(prepared.rows, prepared.keys)
            ids = [row["input_ids"][0].tolist() for row in prepared.rows]  # on the host, unpadded
            # the shared heads' inputs replace the batch's: it goes to the device only without
            enc = self._with_shared_heads(ids, prepared.keys, features, budget) or {
                **self._to_device(prepared.enc), **self._features_input(features)}
        else:
            enc = self._to_device(prepared.enc)
        return greedy_decode(self.model.generate, self.tokenizer, enc, budget, watch=self.model,
                             static=self.static)

    def generate(self, requests: Sequence[MMRequest], use_feature_cache: bool = True) -> list[str]:
        """Greedy answers; requests without an image are asked blind (same model, no image).
        ``use_feature_cache=False``: the pixel path, the reference the cache is tested against."""
        answers: dict[int, str] = {}
        for has_image in (True, False):
            group = [(i, r) for i, r in enumerate(requests) if (r.image is not None) == has_image]
            with_features = has_image and use_feature_cache and self.feature_cache is not None
            texts = self.batcher.map(
                [r for _, r in group],
                self._answer,
                prepare=lambda chunk, w=with_features: self._prepare(chunk, w),
            )
            answers.update({i: t for (i, _), t in zip(group, texts, strict=True)})
        return [answers[i] for i in range(len(requests))]

    def fingerprint(self, workflow: str) -> str:
        """``text``: the decoder and head alone; ``mm``: every weight of the model."""
        if workflow not in self._fingerprints:
            if workflow == "text":
                value = text_model_fingerprint(self._text_lm, self.tokenizer)
            else:
                config = self.model.config.to_dict()
                value = fingerprint_weights(
                    config, resident_tensors(self.model), workflow
                )
            self._fingerprints[workflow] = value
        return self._fingerprints[workflow]
