"""A VLM's text view: its own decoder and head as a causal LM, for the text tasks, where the
forgetting a multimodal fine-tune caused shows (the same weights, shared, not copied)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class DecoderLM(PreTrainedModel, GenerationMixin):
    """A causal LM made of a VLM's decoder and head (shared, not copied), configured by the
    VLM's text config: ``logits = head(decoder(...).last_hidden_state)``, exactly the VLM's
    computation for text without images (no family transforms logits after its head)."""

    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, vlm: PreTrainedModel) -> None:
        super().__init__(vlm.config.get_text_config())
        self.model = vlm.get_decoder()
        self.lm_head = vlm.get_output_embeddings()
        self.generation_config = vlm.generation_config

    def get_decoder(self) -> torch.nn.Module:
        return self.model

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """The decoder's forward (``cache``, masks and positions as the decoder takes them), then
        the head on the last ``logits_to_keep`` positions (0: all)."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=self.lm_head(hidden), cache=out.cache)
