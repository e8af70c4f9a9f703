"""IAA split over several devices (``--device-map``): what must share a device, and the split.

The MM forward runs each insertion layer right after the base layer it follows, on that layer's
output; a device map that filled devices in registration order would put all insertion layers
after the last base layer and send every hidden state across devices and back. So the model is
planned over groups (:func:`~iaa_eval.models.placement.group_device_map`), in the order they
run: the vision tower; the embeddings (base and branches), projectors and RoPE; each base layer
with its insertion layers; the norms and heads (base and branches). accelerate's hooks move the
hidden states from group to group.
"""

from __future__ import annotations

from collections.abc import Mapping

from iaa_eval.models.iaa.modeling import IAAForCausalLM
from iaa_eval.models.placement import dispatch, group_device_map


def placement_groups(model: IAAForCausalLM) -> list[list[str]]:
    """Module names that must share a device, group by group in the order they run."""
    name = {id(module): n for n, module in model.named_modules()}
    branches = [model.branch(w) for w in model.config.workflows]
    text = model.branch("text")
    inputs = (text.embed, *(b.embed for b in branches), *(b.projector for b in branches),
              model.model.rotary_emb)
    groups = [[name[id(model.model.vision_tower)]], [name[id(m)] for m in inputs]]
    for index, layer in enumerate(model.model.layers):
        anchored = [b.layers[k] for b in branches
                    for k, after in enumerate(model.config.insert_after_layers) if after == index]
        groups.append([name[id(m)] for m in (layer, *anchored)])
    groups.append([name[id(m)] for b in (text, *branches) for m in (b.norm, b.head)])
    return groups


def split(
    model: IAAForCausalLM, strategy: str, max_memory: Mapping[str, str] | None = None
) -> IAAForCausalLM:
    """``model`` (loaded on the CPU) placed by ``strategy`` within ``max_memory``; its map is
    kept as ``hf_device_map`` (on the base LM too), where transformers' ``generate`` looks for
    it (it compiles no step of a model offloaded in part, for one)."""
    plan = group_device_map(model, placement_groups(model), strategy, max_memory)
    model.hf_device_map = plan
    base = dict(model.base_lm.named_modules())
    model.base_lm.hf_device_map = {name: plan[name] for name in plan if name in base}
    return dispatch(model, plan)
