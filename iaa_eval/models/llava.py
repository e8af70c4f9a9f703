"""LLaVA-style models in the llava-hf layout (``LlavaForConditionalGeneration``).

Multimodal tasks use the whole model; text tasks use its language model and head alone, which
is where the forgetting of fully fine-tuned multimodal training shows.

Generation encodes each distinct image once per model per run (``feature_cache``): MME asks two
questions per image and MMBench one per option rotation. The cached features reach the model as
``mm_encoder_outputs``, the pre-encoded-features entry point of transformers' LLaVA, so the
language model sees exactly the embeddings the pixel path would have spliced in. Questions of
one image in a batch also share the prompt's prefix (system prompt, image tokens, common words):
it is run once per image and its KV cache copied to each question, whose own tokens follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoProcessor, LlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from iaa_eval.models.base import MMRequest, ModelSpec, TextView, fingerprint_weights, text_model_fingerprint
from iaa_eval.models.generation import (
    GenerationBatcher,
    ensure_pad_token,
    greedy_decode,
    prefill_shared,
    shared_prefix_length,
)
from iaa_eval.models.loading import check_vocabulary, load_pretrained, place, resolve_dtype
from iaa_eval.models.templates import SYSTEM_PROMPT, build_prompt
from iaa_eval.models.vision import FeatureCache


def llava_prompt(processor: Any, text: str, has_image: bool) -> str:
    """The prompt for a question: the processor's chat template (with the LLaVA system prompt)
    when it has one, else the plain template. Training uses it too, so train and eval agree."""
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": text})
        messages = [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": content},
        ]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return build_prompt(processor.tokenizer, text, processor.image_token if has_image else None)


class LlavaModel:
    """Adapter for ``--model NAME=llava:<hub id or dir>``."""

    supports_images = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        dtype = resolve_dtype(spec.dtype, spec.device)
        remote = spec.trust_remote_code
        self.processor = load_pretrained(AutoProcessor.from_pretrained, spec.path, "processor", trust_remote_code=remote)
        model = load_pretrained(
            LlavaForConditionalGeneration.from_pretrained, spec.path, "model", dtype=dtype, trust_remote_code=remote
        )
        self.model = place(model, spec.device)
        self.tokenizer = self.processor.tokenizer
        check_vocabulary(self.tokenizer, self.model.get_input_embeddings().num_embeddings, spec.path)
        ensure_pad_token(self.tokenizer)
        self._text_lm = self._build_text_lm()
        self._fingerprints: dict[str, str] = {}
        self.feature_cache = FeatureCache(self._encode_images)
        self.batcher = GenerationBatcher(spec.batch_size, self.model)
        self.share_prefixes = True  # off: every question's whole prompt is run (the reference path)

    def _build_text_lm(self) -> torch.nn.Module:
        """A causal LM that *shares* the LLaVA language model and head (no copy)."""
        with torch.device("meta"):
            text_lm = AutoModelForCausalLM.from_config(self.model.config.text_config)
        text_lm.model = self.model.model.language_model
        text_lm.lm_head = self.model.lm_head
        return text_lm.eval()

    def text_view(self) -> TextView:
        """Language model + head, without the vision tower and projector."""
        return TextView(self._text_lm, self.tokenizer, self.fingerprint("text"))

    def render_prompt(self, request: MMRequest) -> str:
        """The exact text the model is given for a request, image placeholder unexpanded."""
        return llava_prompt(self.processor, request.prompt, request.image is not None)

    def _encode(self, chunk: Sequence[MMRequest]) -> dict[str, torch.Tensor]:
        images = [r.image.convert("RGB") for r in chunk if r.image is not None]
        enc = self.processor(
            images=images or None, text=[self.render_prompt(r) for r in chunk], return_tensors="pt", padding=True
        )
        return {k: v.to(self.model.device) for k, v in enc.items()}

    def _encode_images(self, images: list) -> torch.Tensor:
        """Projected vision features, shape ``(n_images, n_patches, hidden)``."""
        pixels = self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            out = self.model.model.get_image_features(pixel_values=pixel_values, return_dict=True)
        return torch.stack(list(out.pooler_output))

    def _generate_with_images(self, chunk: Sequence[MMRequest], budget: int) -> list[str]:
        """Greedy answers for requests that all carry an image, features from the cache."""
        features = self.feature_cache.get([r.image for r in chunk], [r.image_key for r in chunk])
        token = self.processor.image_token
        texts = [self.render_prompt(r).replace(token, token * f.shape[0]) for r, f in zip(chunk, features, strict=True)]
        pooled = [f.to(self.model.device, self.model.dtype) for f in features]
        rows = self.tokenizer(texts)["input_ids"]  # as the processor calls it
        image_id = self.model.config.image_token_id
        covers = [max(j for j, t in enumerate(row) if t == image_id) + 1 for row in rows]
        length = shared_prefix_length(rows, [r.image_key for r in chunk], covers) if self.share_prefixes else None
        if length is None:
            enc = self.tokenizer(texts, return_tensors="pt", padding=True)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            enc["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=pooled)}
        else:
            def head_inputs(firsts: list[int]) -> dict[str, Any]:
                features = BaseModelOutputWithPooling(pooler_output=[pooled[i] for i in firsts])
                return {"mm_encoder_outputs": {"image": features}}

            enc = prefill_shared(self.model, rows, [r.image_key for r in chunk], length,
                                 self.tokenizer.pad_token_id, head_inputs)
        return greedy_decode(self.model.generate, self.tokenizer, enc, budget, watch=self.model)

    def generate(self, requests: Sequence[MMRequest], use_feature_cache: bool = True) -> list[str]:
        """Greedy answers; requests without an image are asked blind.

        ``use_feature_cache=False`` runs the processor's pixel path (the reference the cache is
        tested against).
        """
        answers: dict[int, str] = {}
        for has_image in (True, False):
            group = [(i, r) for i, r in enumerate(requests) if (r.image is not None) == has_image]

            def answer(chunk: Sequence[tuple[int, MMRequest]], has_image: bool = has_image) -> list[str]:
                reqs = [r for _, r in chunk]
                budget = max(r.max_new_tokens for r in reqs)
                if has_image and use_feature_cache:
                    return self._generate_with_images(reqs, budget)
                return greedy_decode(self.model.generate, self.tokenizer, self._encode(reqs), budget, watch=self.model)

            texts = self.batcher.map(group, answer)
            answers.update({i: t for (i, _), t in zip(group, texts, strict=True)})
        return [answers[i] for i in range(len(requests))]

    def fingerprint(self, workflow: str) -> str:
        """``text``: the language model alone; ``mm``: every weight of the model."""
        if workflow not in self._fingerprints:
            if workflow == "text":
                value = text_model_fingerprint(self._text_lm, self.tokenizer)
            else:
                config = self.model.config.to_dict()
                value = fingerprint_weights(config, dict(self.model.state_dict(keep_vars=True)), workflow)
            self._fingerprints[workflow] = value
        return self._fingerprints[workflow]
