"""The modules an IAA model holds under ``model.``, and one workflow's view of them.

:class:`IAAInner` registers the frozen base's own embedding, layers, norm and rotary embedding
(shared, not copied) beside each branch's new modules, named as in the official checkpoint.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

from torch import nn
from transformers import CLIPVisionModel, PreTrainedModel

from iaa_eval.models.iaa.configuration import IAAConfig
from iaa_eval.models.iaa.multimodal import VisionTower, build_projector


class Branch(NamedTuple):
    """The modules one workflow reads (``layers``/``projector`` are ``None`` for text)."""

    embed: nn.Embedding
    layers: nn.ModuleList | None
    norm: nn.Module
    head: nn.Linear
    projector: nn.Module | None


class IAAInner(nn.Module):
    """Holds every ``model.*`` module: the frozen ones (shared with the base LM) and the
    branches."""

    def __init__(self, config: IAAConfig, base: PreTrainedModel, vision: CLIPVisionModel) -> None:
        super().__init__()
        text, inner = base.config, base.model
        self.embed_tokens, self.layers, self.norm, self.rotary_emb = (
            inner.embed_tokens, inner.layers, inner.norm, inner.rotary_emb)
        n_layers = len(inner.layers)
        for suffix, proj_name in (("", "mm_projector"), ("_grounding", "mm_projector_G")):
            if suffix and "g" not in config.workflows:
                continue
            setattr(self, f"embed_tokens_condition{suffix}",
                    nn.Embedding(text.vocab_size, text.hidden_size))
            layers = [type(inner.layers[0])(text, after) for after in config.insert_after_layers]
            # cache slot n_layers + k: one cache object, no collisions
            for k, layer in enumerate(layers):
                layer.self_attn.layer_idx = n_layers + k
            setattr(self, f"condition_layers{suffix}", nn.ModuleList(layers))
            setattr(self, f"norm_condition{suffix}", copy.deepcopy(inner.norm))
            setattr(self, proj_name, build_projector(config.projector_type, config.mm_hidden_size,
                                                     text.hidden_size))
        self.vision_tower = VisionTower(vision, config.vision_feature_layer,
                                        config.vision_feature_select)
