"""Any Hugging Face causal LM (``AutoModelForCausalLM``): the *base* model.

It has no eyes: multimodal tasks run blind (the question without the image), the floor against
which a multimodal model's gain is measured.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from iaa_eval.models.base import MMRequest, ModelSpec, TextView, text_model_fingerprint
from iaa_eval.models.batching import GenerationBatcher
from iaa_eval.models.generation import (
    ensure_pad_token,
    greedy_decode,
    static_decode,
)
from iaa_eval.models.loading import (
    check_vocabulary,
    load_pretrained,
    load_weights,
    resolve_dtype,
)
from iaa_eval.models.placement import dtype_device, placed, placement_kwargs
from iaa_eval.models.templates import build_prompt


class HFCausalModel:
    """Adapter for ``--model NAME=hf:<hub id or dir>``."""

    supports_images = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        dtype = resolve_dtype(spec.dtype, dtype_device(spec))
        remote = spec.trust_remote_code
        self.tokenizer = load_pretrained(AutoTokenizer.from_pretrained, spec.path, "tokenizer",
                                         trust_remote_code=remote)
        model = load_weights(AutoModelForCausalLM.from_pretrained, spec.path, "model", dtype=dtype,
                             trust_remote_code=remote, **placement_kwargs(spec))
        self.model = placed(model, spec)
        check_vocabulary(self.tokenizer, self.model.get_input_embeddings().num_embeddings,
                         spec.path)
        ensure_pad_token(self.tokenizer)
        self._host_tokenizer = copy.deepcopy(self.tokenizer)  # the prepare thread's
        self.batcher = GenerationBatcher(spec.batch_size, self.model)
        self.static = static_decode(spec.decode, self.model)
        self._fingerprint: str | None = None

    def text_view(self) -> TextView:
        """The model itself."""
        return TextView(self.model, self.tokenizer, self.fingerprint("text"))

    def _prompts(self, requests: Sequence[MMRequest]) -> list[str]:
        return [build_prompt(self._host_tokenizer, r.prompt) for r in requests]

    def generate(self, requests: Sequence[MMRequest]) -> list[str]:
        """Blind answers: images, if any, are ignored by a text-only model. Prompts are
        tokenized a batch ahead, on the host, with the host's own copy of the tokenizer."""

        def prepare(chunk: Sequence[MMRequest]) -> tuple[dict[str, torch.Tensor], int]:
            enc = self._host_tokenizer(self._prompts(chunk), return_tensors="pt", padding=True,
                                       add_special_tokens=False)
            return dict(enc), max(r.max_new_tokens for r in chunk)

        def answer(prepared: tuple[dict[str, torch.Tensor], int]) -> list[str]:
            enc, budget = prepared
            rows, width = enc["input_ids"].shape
            self.batcher.fit(rows, width + budget)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            return greedy_decode(self.model.generate, self.tokenizer, enc, budget, watch=self.model,
                                 static=self.static)

        return self.batcher.map(list(requests), answer, prepare=prepare)

    def fingerprint(self, workflow: str) -> str:
        """Text and blind answers both come from the same weights: one fingerprint."""
        if self._fingerprint is None:
            self._fingerprint = text_model_fingerprint(self.model, self.tokenizer)
        return self._fingerprint


