"""``IAAForCausalLM``: a frozen Hugging Face decoder plus inner adaptors (IAA, arXiv 2408.12902).

The frozen stack, the insertion layers, the norms and the rotary embedding are transformers' own
modules of the base family; nothing is vendored. Attribute names follow the official checkpoint
(``model.condition_layers.k``, ``lm_head_condtion`` (sic), ...), so its keys load without renaming.
The base ``*ForCausalLM`` is kept unregistered: its modules are registered once, under ``model.``
and ``lm_head``, and ``base_lm`` is that very model (text workflow == base LM, bit for bit).

Generation is transformers' own (``GenerationMixin``, with a dynamic or a static cache). The one
IAA step before it: each image's single ``-200`` placeholder is widened to the
number of positions its features take, so ids, attention mask and cache agree position by
position, as transformers' bookkeeping assumes; the prompt comes back as it was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import init_empty_weights
from torch import nn
from torch.compiler import is_compiling
from transformers import AutoModelForCausalLM, CLIPVisionModel, DynamicCache, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_masks_for_generate
from transformers.utils import ModelOutput

from iaa_eval.errors import ModelError
from iaa_eval.models.iaa.configuration import IMAGE_PLACEHOLDER_ID, SUPPORTED_BASES, IAAConfig
from iaa_eval.models.iaa.convert import check_state_dict, read_checkpoint, save_iaa
from iaa_eval.models.iaa.inner import Branch, IAAInner
from iaa_eval.models.iaa.multimodal import (
    IGNORE_INDEX,
    claim_cache,
    expand_placeholders,
    splice_images,
)


@dataclass
class IAAOutput(ModelOutput):
    """logits: ``(batch, spliced_len, vocab)`` float32; attention_mask: the spliced mask covering
    the cache and this call (what the next decode step extends; ``None`` when ``generate`` made a
    4-D one); cache: the updated KV cache."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    cache: Cache | None = None


class IAAForCausalLM(PreTrainedModel, GenerationMixin):
    """Frozen base LM + inner adaptors; ``forward(..., workflow="text"|"mm"|"g")``.

    Example:
        >>> model = IAAForCausalLM.from_base(llama, clip, positions=[0, 1])
        >>> model(ids, pixel_values=px, workflow="mm").logits.shape  # (1, len(ids) - 1 + 16, vocab)
    """

    config_class = IAAConfig
    base_model_prefix = "model"
    # a decode step on a static cache traces as one graph (tested: torch.compile(fullgraph=True))
    _can_compile_fullgraph = True

    def __init__(self, config: IAAConfig, base: PreTrainedModel | None = None,
                 vision: CLIPVisionModel | None = None):
        super().__init__(config)
        base = base if base is not None else AutoModelForCausalLM.from_config(config.text_config)
        object.__setattr__(self, "base_lm", base)  # unregistered: its modules are registered below
        vision = vision if vision is not None else CLIPVisionModel(config.vision_config)
        self.model = IAAInner(config, base, vision)
        self.lm_head = base.lm_head
        text = base.config
        self.lm_head_condtion = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        if "g" in config.workflows:
            self.lm_head_condtion_grounding = nn.Linear(text.hidden_size, text.vocab_size,
                                                        bias=False)

    @classmethod
    def from_base(
        cls,
        base: PreTrainedModel,
        vision_tower: CLIPVisionModel,
        positions: list[int] | str = "iaa-14",
        workflows: tuple[str, ...] = ("mm",),
        **config_fields: object,
    ) -> IAAForCausalLM:
        """Wrap ``base`` (shared, frozen): insertion layers copy the layers they follow, the MM/G
        embedding, norm and head copy the base's; projectors are freshly initialised (LLaVA style).

        ``config_fields`` go to :class:`IAAConfig` (``image_token_id``,
        ``vision_feature_layer``, ...).
        """
        model_type = getattr(base.config, "model_type", None)
        wrappable = hasattr(base, "model") and hasattr(base.model, "layers")
        if not wrappable or model_type not in SUPPORTED_BASES:
            raise ModelError(f"cannot wrap base {type(base).__name__} (model_type={model_type!r}); "
                             f"supported: {', '.join(SUPPORTED_BASES)} causal LMs")
        config = IAAConfig(text_config=base.config, vision_config=vision_tower.config,
                           insert_after_layers=positions,
                           workflows=list(workflows), **config_fields)
        model = cls(config, base=base, vision=vision_tower)
        base.requires_grad_(False)
        vision_tower.requires_grad_(False)
        with torch.no_grad():
            for name in config.workflows:
                branch = model.branch(name)
                for module in (branch.embed, branch.layers, branch.norm, branch.head,
                               branch.projector):
                    # never .to() the shared base (its RoPE buffer)
                    module.to(device=base.device, dtype=base.dtype)
                for k, after in enumerate(config.insert_after_layers):
                    branch.layers[k].load_state_dict(base.model.layers[after].state_dict())
                branch.embed.weight.copy_(base.model.embed_tokens.weight)
                branch.norm.load_state_dict(base.model.norm.state_dict())
                branch.head.weight.copy_(base.lm_head.weight)
        return model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                        dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> IAAForCausalLM:
        """Load our layout or the official one (read by
        :func:`~iaa_eval.models.iaa.convert.read_checkpoint`); a missing, unexpected or misshapen
        tensor is an error, never a random weight."""
        config, tensors = read_checkpoint(path, dtype=dtype or torch_dtype)
        with init_empty_weights():  # parameters on meta, buffers (rotary, CLIP position ids) real
            model = cls(config)
        check_state_dict(model, tensors, path)
        model.load_state_dict(tensors, strict=True, assign=True)
        if config.text_config.tie_word_embeddings:
            model.base_lm.lm_head.weight = model.base_lm.model.embed_tokens.weight
        model.base_lm.requires_grad_(False)
        model.model.vision_tower.requires_grad_(False)
        return model.to(device).eval()

    def save_pretrained(self, path: str | os.PathLike, official: bool = False,
                        **kwargs: object) -> None:
        """Write ``config.json`` + ``model.safetensors``; see
        :func:`iaa_eval.models.iaa.convert.save_iaa` (``official=True``, ``vision_inside``,
        ``tokenizer``, ``image_processor``)."""
        save_iaa(self, path, official=official, **kwargs)

    def train(self, mode: bool = True) -> IAAForCausalLM:
        """Also flips the (unregistered) base LM's own flag, so ``base_lm.training`` stays
        truthful."""
        self.base_lm.train(mode)
        return super().train(mode)

    def branch(self, workflow: str) -> Branch:
        """The embedding, insertion layers, norm, head and projector that ``workflow`` uses."""
        m = self.model
        if workflow == "text":
            return Branch(m.embed_tokens, None, m.norm, self.lm_head, None)
        if workflow == "mm":
            return Branch(m.embed_tokens_condition, m.condition_layers, m.norm_condition,
                          self.lm_head_condtion,
                          m.mm_projector)
        if workflow == "g" and "g" in self.config.workflows:
            return Branch(m.embed_tokens_condition_grounding, m.condition_layers_grounding,
                          m.norm_condition_grounding, self.lm_head_condtion_grounding,
                          m.mm_projector_G)
        raise ModelError(f"workflow={workflow!r}: this model has workflows text, "
                         f"{', '.join(self.config.workflows)}")

    def trainable_groups(self, workflow: str = "mm") -> dict[str, list[nn.Parameter]]:
        """The parameter groups that IAA training may update, per name (everything else stays
        frozen)."""
        b = self.branch(workflow)
        return {"projector": list(b.projector.parameters()),
                "insertion_layers": list(b.layers.parameters()),
                "embedding": list(b.embed.parameters()), "norm": list(b.norm.parameters()),
                "head": list(b.head.parameters())}

    def project_images(self, workflow: str, pixel_values: torch.Tensor | None = None,
                       image_features: torch.Tensor | None = None) -> torch.Tensor | None:
        """Vision features (from pixels, or given pre-projector) through the workflow's
        projector."""
        if pixel_values is None and image_features is None:
            return None
        projector = self.branch(workflow).projector
        if projector is None:
            raise ModelError("workflow='text' takes no images: it is the unmodified base LM; "
                             "use workflow='mm'")
        if pixel_values is not None and image_features is not None:
            raise ModelError("pass pixel_values or image_features, not both")
        features = (self.model.vision_tower(pixel_values) if image_features is None
                    else image_features)
        if features.shape[-1] != self.config.mm_hidden_size:
            raise ModelError(f"image features have width {features.shape[-1]} but the projector "
                             f"expects mm_hidden_size={self.config.mm_hidden_size}")
        return projector(features.to(self.dtype))  # (n_images, patches, hidden)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        workflow: str = "text",
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        image_features: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        position_ids: torch.LongTensor | None = None,
        return_dict: bool = True,  # noqa: ARG002 (from generate; always a ModelOutput)
    ) -> IAAOutput:
        """One pass of ``workflow``; ``input_ids`` carry -200 where each image goes (one per image,
        in order).

        Args:
            input_ids: ``(batch, seq)``; -200 marks an image.
            attention_mask: ``(batch, past + seq)``, 1 = real token; left or right padding both work
                (positions come from the mask). Past columns are at the spliced length.
            pixel_values: ``(n_images, 3, H, W)``, images in placeholder order across the batch.
            workflow: ``text`` (base LM, bit-identical), ``mm`` or ``g``.
            labels: ``(batch, seq)`` targets aligned with the ids (-100: no loss), shifted here.
            cache: a ``Cache`` (dynamic or static) of one workflow; created when ``use_cache``.
            use_cache: return the updated cache.
            image_features: ``(n_images, patches, mm_hidden)`` vision features instead of pixels.
            logits_to_keep: compute logits for the last N positions only (0 = all).
            position_ids: read with ``generate``'s 4-D mask only (static cache; else from the mask).
        """
        branch = self.branch(workflow)
        cache = DynamicCache() if use_cache and cache is None else cache
        if cache is not None:
            claim_cache(cache, workflow)
        past = cache.get_seq_length() if cache is not None else 0
        prepared = attention_mask is not None and attention_mask.ndim == 4  # by generate
        if not prepared and attention_mask is not None and (
                attention_mask.shape[1] != past + input_ids.shape[1]):
            raise ModelError(f"attention_mask has {attention_mask.shape[1]} columns; expected "
                             f"cached {past} + new {input_ids.shape[1]}")
        images = self.project_images(workflow, pixel_values, image_features)
        if workflow == "text" and not is_compiling() and (input_ids == IMAGE_PLACEHOLDER_ID).any():
            raise ModelError("workflow='text' got image placeholders (-200) in input_ids; "
                             "use workflow='mm'")
        current_mask = None if attention_mask is None or prepared else attention_mask[:, past:]
        hidden, current_mask, labels = splice_images(
            input_ids, current_mask, labels, branch.embed, images)
        length = hidden.shape[1]  # spliced length of this call
        if prepared:
            mask, positions = attention_mask, position_ids
        elif current_mask is None:
            mask = None
            positions = torch.arange(past, past + length, device=hidden.device).unsqueeze(0)
        else:
            past_mask = (attention_mask[:, :past] if attention_mask is not None
                         else current_mask.new_ones(current_mask.shape[0], past))
            mask = torch.cat([past_mask.to(current_mask.dtype), current_mask], dim=1)
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (batch, length)
        text_config = self.base_lm.config
        causal = create_causal_mask(config=text_config, inputs_embeds=hidden, attention_mask=mask,
                                    cache=cache, position_ids=positions)
        rope = self.model.rotary_emb(hidden, position_ids=positions)  # one RoPE for every layer
        inserted = dict(zip(self.config.insert_after_layers, branch.layers or [], strict=False))
        for index, layer in enumerate(self.model.layers):
            layer_args = dict(attention_mask=causal, position_ids=positions, cache=cache,
                              use_cache=use_cache, position_embeddings=rope)
            hidden = layer(hidden, **layer_args)
            if index in inserted:  # the insertion layer's output replaces the hidden state
                hidden = inserted[index](hidden, **layer_args)
        hidden = branch.norm(hidden)
        logits = branch.head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden).float()
        loss = None
        if labels is not None:
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(logits.device)
            loss = nn.functional.cross_entropy(shift_logits.reshape(-1, logits.shape[-1]),
                                               shift_labels.reshape(-1), ignore_index=IGNORE_INDEX)
        full_mask = mask if mask is not None else torch.ones(hidden.shape[0], past + length,
                                                             dtype=torch.long, device=hidden.device)
        return IAAOutput(loss=loss, logits=logits, attention_mask=None if prepared else full_mask,
                         cache=cache if use_cache else None)

    def generate(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.LongTensor:
        """transformers' ``generate`` on the ids with each image placeholder widened (``workflow``,
        ``pixel_values``, ``image_features``, ``cache`` go to :meth:`forward`); returns
        ``input_ids`` as given (one -200 per image) followed by the new tokens."""
        if kwargs.get("eos_token_id") == [] and self.generation_config.pad_token_id is None:
            # no EOS: rows never finish; transformers wants a pad
            kwargs.setdefault("pad_token_id", 0)
        if not (input_ids == IMAGE_PLACEHOLDER_ID).any():
            return super().generate(input_ids, attention_mask=attention_mask, **kwargs)
        vision = self.config.vision_config
        cls_token = self.config.vision_feature_select != "patch"
        patches = (vision.image_size // vision.patch_size) ** 2 + cls_token
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        ids, mask = expand_placeholders(input_ids, mask, patches, kwargs.get("pad_token_id") or 0)
        out = super().generate(ids, attention_mask=mask, **kwargs)
        return torch.cat([input_ids, out[:, ids.shape[1]:]], dim=1)

    def prepare_inputs_for_generation(self, *args: Any, is_first_iteration: bool = False,
                                      **kwargs: Any) -> dict[str, Any]:
        """Images enter at the first step only: later steps continue a cache that holds them."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration,
                                                       **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs["image_features"] = None
        return inputs

    def create_masks_for_generate(self, config: Any, **kwargs: Any) -> Any:  # noqa: ARG002
        """transformers' masks for a static cache (4-D, its fixed length: the decode step keeps one
        shape), made for the base's config, whose attention implementation the layers run."""
        return create_masks_for_generate(config=self.base_lm.config, **kwargs)
