"""The multimodal pieces around the decoder loop: vision tower, projector, image splicing, caches.

Kept apart from ``modeling.py`` so that the IAA data flow reads in one screen there.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionModel
from transformers.cache_utils import Cache

from iaa_eval.errors import ModelError
from iaa_eval.models.iaa.configuration import IMAGE_PLACEHOLDER_ID

IGNORE_INDEX = -100


class VisionTower(nn.Module):
    """Frozen CLIP encoder; keys ``vision_tower.vision_model.*`` as in the official layout."""

    def __init__(self, clip: CLIPVisionModel, feature_layer: int, select: str) -> None:
        super().__init__()
        self.vision_tower = clip
        self.feature_layer, self.select = feature_layer, select

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` -> ``(n, patches, width)``: a pre-``post_layernorm`` hidden state."""
        out = self.vision_tower(pixel_values.to(self.vision_tower.dtype), output_hidden_states=True)
        features = out.hidden_states[self.feature_layer]  # (n, 1 + patches, width)
        return features[:, 1:] if self.select == "patch" else features


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """``mlp2x_gelu``: Linear, exact GELU, Linear (keys ``.0``/``.2``); ``linear``: one Linear."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def claim_cache(cache: Cache, workflow: str) -> None:
    """Caches hold workflow-specific K/V (MM states pass the frozen layers too): never mix them."""
    owner = getattr(cache, "iaa_workflow", None)
    if owner is None:
        cache.iaa_workflow = workflow
    elif owner != workflow:
        raise ModelError(f"this cache was filled by workflow={owner!r}; it cannot continue "
                         f"workflow={workflow!r}")


def splice_images(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    labels: torch.LongTensor | None,
    embed: nn.Embedding,
    images: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.LongTensor | None]:
    """Embed ``input_ids`` with the workflow's table and replace each -200 by the next image's
    features (or, when each image's placeholder is already widened to its length, fill those in).

    Rows whose spliced lengths differ are left-padded (mask 0, label -100). Returns
    ``(embeds (batch, len, hidden), mask (batch, len) or None, labels or None)``.
    """
    if images is None and torch.compiler.is_compiling():
        # a compiled decode step: no image, and no data-dependent placeholder count to check
        return embed(input_ids), attention_mask, labels
    is_image = input_ids == IMAGE_PLACEHOLDER_ID
    n_slots, n_images = int(is_image.sum()), 0 if images is None else images.shape[0]
    if n_images and n_slots != n_images and n_slots == images.shape[0] * images.shape[1]:
        return splice_widened(input_ids, attention_mask, labels, embed, images)
    if n_slots != n_images:
        raise ModelError(f"input_ids hold {n_slots} image placeholder(s) (-200) but {n_images} "
                         "image(s) were given; each image needs exactly one placeholder, in order")
    embeds = embed(input_ids.masked_fill(is_image, 0))  # (batch, seq, hidden)
    if n_images == 0:
        return embeds, attention_mask, labels
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    rows, masks, targets, used = [], [], [], 0
    for b in range(input_ids.shape[0]):
        e_parts, m_parts, t_parts, start = [], [], [], 0
        for pos in is_image[b].nonzero().flatten().tolist():
            feats = images[used].to(embeds.dtype)  # (patches, hidden)
            e_parts += [embeds[b, start:pos], feats]
            m_parts += [mask[b, start:pos], mask[b, pos].expand(feats.shape[0])]
            if labels is not None:
                t_parts += [labels[b, start:pos], labels.new_full((feats.shape[0],), IGNORE_INDEX)]
            start, used = pos + 1, used + 1
        e_parts.append(embeds[b, start:])
        m_parts.append(mask[b, start:])
        rows.append(torch.cat(e_parts))
        masks.append(torch.cat(m_parts))
        if labels is not None:
            targets.append(torch.cat([*t_parts, labels[b, start:]]))
    width = max(r.shape[0] for r in rows)
    pad = [width - r.shape[0] for r in rows]
    out_embeds = torch.stack([nn.functional.pad(r, (0, 0, p, 0))
                              for r, p in zip(rows, pad, strict=True)])
    out_mask = torch.stack([nn.functional.pad(m, (p, 0)) for m, p in zip(masks, pad, strict=True)])
    out_labels = None
    if labels is not None:
        out_labels = torch.stack([nn.functional.pad(t, (p, 0), value=IGNORE_INDEX)
                                  for t, p in zip(targets, pad, strict=True)])
    if attention_mask is None and not any(pad):
        out_mask = None
    return out_embeds, out_mask, out_labels


def splice_widened(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    labels: torch.LongTensor | None,
    embed: nn.Embedding,
    images: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.LongTensor | None]:
    """:func:`splice_images` for ids whose images each hold ``patches`` consecutive -200s."""
    is_image = input_ids == IMAGE_PLACEHOLDER_ID
    embeds = embed(input_ids.masked_fill(is_image, 0))
    embeds = embeds.masked_scatter(is_image[..., None], images.to(embeds.dtype))
    labels = None if labels is None else labels.masked_fill(is_image, IGNORE_INDEX)
    return embeds, attention_mask, labels


def expand_placeholders(input_ids: torch.LongTensor, attention_mask: torch.Tensor, patches: int,
                        pad: int) -> tuple[torch.LongTensor, torch.Tensor]:
    """Each -200 repeated ``patches`` times (ids and mask), rows left-padded again to one width:
    the ids then have the spliced length, as ``generate`` expects of a prompt."""
    repeats = torch.where(input_ids == IMAGE_PLACEHOLDER_ID, patches, 1)
    ids = [row.repeat_interleave(r) for row, r in zip(input_ids, repeats, strict=True)]
    masks = [row.repeat_interleave(r) for row, r in zip(attention_mask, repeats, strict=True)]
    width = max(len(row) for row in ids)
    return (torch.stack([nn.functional.pad(row, (width - len(row), 0), value=pad) for row in ids]),
            torch.stack([nn.functional.pad(row, (width - len(row), 0)) for row in masks]))
