"""Model parallel: one model split over several devices (``--device-map``/``--max-memory``).

For a model larger than one GPU. accelerate computes which module goes where (filling the GPUs
in order, ``auto``/``balanced`` evenly, then the CPU) and hooks each placed block so its inputs
move to its device; a block mapped to the CPU while a GPU computes is *offloaded*: its weights
stay in host memory and visit the GPU for each forward (its parameters show as ``meta``).
transformers does this inside ``from_pretrained(device_map=...)``; IAA, whose insertion layers
must sit with the layers they follow, is planned here over groups of modules that share a
device (:func:`group_device_map`; the groups: :mod:`iaa_eval.models.iaa.placement`). Data
parallel (torchrun) copies the model on each rank instead: the two on the same devices would
load several copies of a too-large model, so they are refused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from iaa_eval.errors import UsageError
from iaa_eval.models.loading import place

if TYPE_CHECKING:
    from iaa_eval.models.base import ModelSpec

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_placement(
    device_map: str | None, max_memory: str | None, world_size: int
) -> dict[str, str] | None:
    """Check ``--device-map``/``--max-memory`` and return ``--max-memory`` as ``{device: size}``
    (``"0=70GiB,cpu=200GiB"`` -> ``{"0": "70GiB", "cpu": "200GiB"}``); one-line errors."""
    from accelerate.utils import convert_file_size_to_int

    if device_map is None:
        if max_memory is not None:
            raise UsageError("--max-memory needs --device-map (it bounds what the map puts on "
                             "each device)")
        return None
    if device_map not in STRATEGIES:
        raise UsageError(f"--device-map {device_map!r}: expected one of {', '.join(STRATEGIES)}")
    if world_size > 1:
        raise UsageError(
            f"--device-map with {world_size} data-parallel processes (WORLD_SIZE={world_size}): "
            "each would load the whole model across the same devices; use one process for "
            "--device-map, or torchrun without it"
        )
    if max_memory is None:
        return None
    budget: dict[str, str] = {}
    for entry in max_memory.split(","):
        device, sep, size = (part.strip() for part in entry.partition("="))
        if not (sep and device and size):
            raise UsageError(
                f"--max-memory {entry!r}: expected DEVICE=SIZE, e.g. 0=70GiB,cpu=200GiB"
            )
        _check_device(device)
        try:
            if convert_file_size_to_int(size) <= 0:
                raise ValueError(size)
        except ValueError:
            raise UsageError(
                f"--max-memory {entry!r}: size {size!r} is not a size like 70GiB or 500MB"
            ) from None
        budget[device] = size
    return budget


def _check_device(device: str) -> None:
    """``cpu`` or the index of a GPU that this machine has."""
    if device == "cpu":
        return
    if not device.isdigit():
        raise UsageError(
            f"--max-memory {device}=...: device {device!r} is not a GPU index (0, 1, ...) or cpu"
        )
    count = torch.cuda.device_count()
    if int(device) >= count:
        raise UsageError(
            f"--max-memory {device}=...: no GPU {device} on this machine (it has {count})"
        )


def accelerate_max_memory(budget: Mapping[str, str] | None) -> dict[int | str, str] | None:
    """``{"0": "70GiB", "cpu": ...}`` as accelerate keys it: GPU indices as ints."""
    if budget is None:
        return None
    return {int(k) if k.isdigit() else k: v for k, v in budget.items()}


def placement_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """``from_pretrained`` keywords that place the model as ``spec`` asks (none: one device)."""
    if spec.device_map is None:
        return {}
    return {"device_map": spec.device_map, "max_memory": accelerate_max_memory(spec.max_memory)}


def placed(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The loaded model in eval mode: already placed by its device map, else moved to
    ``spec.device``."""
    return model.eval() if spec.device_map is not None else place(model, spec.device)


def dtype_device(spec: ModelSpec) -> str:
    """The device that decides ``--dtype auto``: with a device map, CUDA wherever there is a GPU."""
    if spec.device_map is not None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec.device


def group_device_map(
    model: nn.Module,
    groups: Sequence[Sequence[str]],
    strategy: str,
    max_memory: Mapping[str, str] | None = None,
) -> dict[str, int | str]:
    """A device map for ``model`` that keeps each group of modules (names, in the order they run)
    on one device, computed by accelerate exactly as transformers does for ``strategy``.

    accelerate fills devices in the order a model *registers* its modules and splits at module
    boundaries; ``groups`` give the order that *runs* and what must not be split. Every module
    name of the model must be covered (a missing one is an error, never an unplaced weight).
    """
    from accelerate.utils import get_balanced_memory, get_max_memory, infer_auto_device_map

    modules = dict(model.named_modules())
    plan = nn.Module()
    for index, names in enumerate(groups):
        group = _Group()
        for name in names:
            group.add_module(name.replace(".", ":"), modules[name])
        plan.add_module(f"group{index}", group)
    covered = {
        f"{n}.{p}" for names in groups for n in names for p, _ in modules[n].named_parameters()
    }
    if missing := sorted({p for p, _ in model.named_parameters()} - covered):
        raise ValueError(f"device-map groups leave {len(missing)} weights unplaced: {missing[:4]}")
    budget = accelerate_max_memory(max_memory)
    if strategy == "sequential":
        budget = get_max_memory(budget)
    else:
        low_zero = strategy == "balanced_low_0"
        budget = get_balanced_memory(plan, budget, ["_Group"], low_zero=low_zero)
    planned = infer_auto_device_map(plan, budget, ["_Group"], clean_result=False)
    return {name: planned[f"group{index}"] for index, names in enumerate(groups) for name in names}


class _Group(nn.Module):
    """Modules that must share a device (children named by their dotted names, ``.`` -> ``:``)."""


def dispatch(model: nn.Module, device_map: Mapping[str, int | str]) -> nn.Module:
    """Place ``model`` by ``device_map`` with accelerate's hooks: each block's inputs follow it to
    its device, and the model's outputs come back to where its inputs were."""
    from accelerate import dispatch_model

    skip = list(getattr(model, "_skip_keys_device_placement", None) or [])
    return dispatch_model(model, dict(device_map), skip_keys=skip).eval()
