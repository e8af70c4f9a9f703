"""Adapter for ``--model NAME=iaa:<dir>[#g]``: our IAA model behind the ``EvalModel`` protocol.

Text tasks get the wrapped base LM itself (a real ``*ForCausalLM`` sharing the frozen weights),
so its text fingerprint equals the ``hf`` adapter's on the same base and tokenizer and the runner
shares their text results. Multimodal tasks use the MM workflow (``#g`` after the path selects
the grounding workflow); a request without an image runs that workflow blind.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function
from transformers import AutoTokenizer

from iaa_eval.errors import ModelError
from iaa_eval.models.base import (
    MMRequest,
    ModelSpec,
    TextView,
    fingerprint_weights,
    resident_tensors,
    text_model_fingerprint,
    tokenizer_digest,
)
from iaa_eval.models.batching import GenerationBatcher
from iaa_eval.models.generation import (
    ensure_pad_token,
    greedy_decode,
    left_padded,
    prefill_shared,
    shared_prefix_lengths,
    static_decode,
)
from iaa_eval.models.iaa.configuration import IMAGE_PLACEHOLDER_ID
from iaa_eval.models.iaa.convert import load_image_processor
from iaa_eval.models.iaa.modeling import IAAForCausalLM
from iaa_eval.models.iaa.placement import split
from iaa_eval.models.iaa.preprocess import pixel_values, prompt_text, to_model_ids
from iaa_eval.models.loading import check_vocabulary, load_pretrained, resolve_dtype
from iaa_eval.models.placement import dtype_device
from iaa_eval.models.vision import FeatureCache, image_key, pil_image_processor


@dataclass
class Prepared:
    """A batch as the host prepared it: prompt ids, each row's image key (``None``: blind) and
    the preprocessed pixels of the images the feature cache lacked."""

    requests: Sequence[MMRequest]
    ids: list[list[int]]
    keys: list[str | None]
    pixels: dict[str, torch.Tensor]


def split_path(path: str) -> tuple[str, str]:
    """``"dir#g"`` -> ``("dir", "g")``; no suffix means the MM workflow."""
    folder, _, workflow = path.partition("#")
    workflow = workflow or "mm"
    if workflow not in ("mm", "g"):
        raise ModelError(
            f"--model ...=iaa:{path}: workflow suffix #{workflow} unknown; use #mm or #g"
        )
    return folder, workflow


class IAAModel:
    """Adapter for ``--model NAME=iaa:<dir>``; ``feature_cache`` counts vision-encoder hits and
    misses."""

    supports_images = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        folder, self.workflow = split_path(spec.path)
        if not Path(folder).expanduser().is_dir():
            raise ModelError(f"IAA checkpoint {folder!r}: no such directory (hub ids are not "
                             "fetched; pass a local download of the checkpoint)")
        dtype = resolve_dtype(spec.dtype, dtype_device(spec))
        device = "cpu" if spec.device_map else spec.device  # a device map places it from there
        self.model = IAAForCausalLM.from_pretrained(folder, dtype=dtype, device=device)
        if spec.device_map:
            self.model = split(self.model, spec.device_map, spec.max_memory)
        self.model.branch(self.workflow)  # raises early if the checkpoint lacks the G branch
        # The base's config stands in for config.json, whose official model_type ("IAA")
        # transformers does not know: reading it again only draws warnings.
        self.tokenizer = load_pretrained(AutoTokenizer.from_pretrained, folder, "tokenizer",
                                         config=self.model.config.text_config,
                                         trust_remote_code=spec.trust_remote_code)
        check_vocabulary(self.tokenizer, self.model.config.text_config.vocab_size, folder)
        self.image_processor = load_image_processor(Path(folder).expanduser(),
                                                    self.model.config.vision_tower_path)
        self._setup()

    @classmethod
    def from_model(cls, spec: ModelSpec, model: IAAForCausalLM, tokenizer: Any,
                   image_processor: Any, workflow: str = "mm") -> IAAModel:
        """The adapter around a model, tokenizer and image processor built in memory (the GPU
        benchmarks' random weights of real shapes), placed where they are."""
        adapter = cls.__new__(cls)
        adapter.spec, adapter.model, adapter.workflow = spec, model.eval(), workflow
        adapter.tokenizer, adapter.image_processor = tokenizer, image_processor
        adapter._setup()
        return adapter

    def _setup(self) -> None:
        """What follows from the model, tokenizer and processor: caches, batching, decoding."""
        ensure_pad_token(self.tokenizer)
        self.image_processor = pil_image_processor(self.image_processor)
        self._host_tokenizer = copy.deepcopy(self.tokenizer)  # the prepare thread's
        self.feature_cache = FeatureCache(self._encode_images)
        config = self.model.config  # the workflow's insertion layers keep K/V too
        layers = config.text_config.num_hidden_layers + len(config.insert_after_layers)
        self.batcher = GenerationBatcher(self.spec.batch_size, self.model, kv_layers=layers)
        self.static = static_decode(self.spec.decode, self.model)
        # off: every question's whole prompt is run (the reference path)
        self.share_prefixes = True
        self._fingerprints: dict[str, str] = {}

    @torch.no_grad()
    def _encode_images(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Vision features of preprocessed images (``(3, H, W)`` each): ``(n, patches, dim)``."""
        return self.model.model.vision_tower(torch.stack(images).to(self.model.device))

    def _pixels(self, images: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Each image preprocessed, by key (none for none: a processor may refuse an empty
        list)."""
        if not images:
            return {}
        aspect = self.model.config.image_aspect_ratio
        pixels = pixel_values(list(images.values()), self.image_processor, aspect)
        return dict(zip(images, pixels, strict=True))

    def text_view(self) -> TextView:
        """The wrapped base LM, unmodified (its weights are the frozen ones IAA runs on)."""
        return TextView(self.model.base_lm, self.tokenizer, self.fingerprint("text"))

    def _prepare(self, chunk: Sequence[MMRequest]) -> Prepared:
        """The host's part of a batch: prompt ids (with -200 where the image goes) and each
        distinct image preprocessed, unless the feature cache has it already."""
        tokenizer = self._host_tokenizer
        token_id = self.model.config.image_token_id
        ids = []
        for request in chunk:
            has_image = request.image is not None
            text = prompt_text(tokenizer, request.prompt, token_id, has_image)
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.append(to_model_ids(tokens, token_id, has_image))
        keys = [None if r.image is None else r.image_key or image_key(r.image) for r in chunk]
        todo = {k: r.image for k, r in zip(keys, chunk, strict=True)
                if k is not None and k not in self.feature_cache}
        return Prepared(chunk, ids, keys, self._pixels(todo))

    def _features(self, prepared: Prepared) -> torch.Tensor | None:
        """The batch's image features in row order (rows with an image), from the cache or from
        the pixels prepared for them (preprocessed now if the cache dropped them since)."""
        rows = [(k, r.image) for k, r in zip(prepared.keys, prepared.requests, strict=True)
                if k is not None]
        if not rows:
            return None
        late = {k: image for k, image in rows
                if k not in prepared.pixels and k not in self.feature_cache}
        pixels = {**prepared.pixels, **self._pixels(late)}
        # keys the cache holds are never encoded: their pixels are not needed
        images = [pixels.get(k) for k, _ in rows]
        with record_function("iaa_eval.encode_images"):
            return torch.stack(self.feature_cache.get(images, [k for k, _ in rows]))

    def _answer(self, prepared: Prepared) -> list[str]:
        """Greedy answers to a prepared batch through the workflow."""
        ids, keys, features = prepared.ids, prepared.keys, self._features(prepared)
        budget = max(r.max_new_tokens for r in prepared.requests)
        image_tokens = 0 if features is None else features.shape[1] - 1  # beyond the placeholder
        self.batcher.fit(len(ids), max(len(row) for row in ids) + image_tokens + budget)
        covers = [row.index(IMAGE_PLACEHOLDER_ID) + 1 if IMAGE_PLACEHOLDER_ID in row else 0
                  for row in ids]
        lengths = shared_prefix_lengths(ids, keys, covers) if self.share_prefixes else None
        pad = self.tokenizer.pad_token_id
        if lengths is None:
            batch, images = left_padded(ids, pad, self.model.device), features
        else:  # the prefill consumed every image
            def head_inputs(firsts: list[int]) -> dict[str, Any]:
                return {"workflow": self.workflow, "image_features": features[firsts]}

            batch = prefill_shared(self.model, ids, keys, lengths, pad, head_inputs)
            images = None

        def run(**kwargs: Any) -> torch.Tensor:
            return self.model.generate(workflow=self.workflow, image_features=images, **kwargs)

        return greedy_decode(run, self.tokenizer, batch, budget, watch=self.model,
                             static=self.static)

    def generate(self, requests: Sequence[MMRequest]) -> list[str]:
        """Greedy answers through the MM (or G) workflow; left-padded batches, images and blind
        mixed; the next batch is prepared on the host while this one runs."""
        return self.batcher.map(list(requests), self._answer, prepare=self._prepare)

    def fingerprint(self, workflow: str) -> str:
        """``text``: the base LM as a text model; otherwise all weights + the workflow actually
        run."""
        key = "text" if workflow == "text" else self.workflow
        if key not in self._fingerprints:
            if key == "text":
                value = text_model_fingerprint(self.model.base_lm, self.tokenizer)
            else:
                config = self.model.config.to_dict()
                # where it was loaded from does not change answers
                config.pop("vision_tower_path", None)
                config["tokenizer"] = tokenizer_digest(self.tokenizer)
                value = fingerprint_weights(config, resident_tensors(self.model), f"iaa:{key}")
            self._fingerprints[key] = value
        return self._fingerprints[key]
