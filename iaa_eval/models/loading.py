"""Shared loading helpers: dtype/device resolution, safe ``from_pretrained``, vocabulary checks."""

from __future__ import annotations

import functools
import logging
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError

from iaa_eval.errors import ModelError

log = logging.getLogger(__name__)
T = TypeVar("T")
HUB_PROBE_S = 3.0  # seconds one connection attempt to the hub may take

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` = bfloat16 on CUDA (where it is fast), float32 on CPU (where it is exact)."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPES:
        raise ModelError(f"--dtype {name!r}: expected one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def looks_local(path: str) -> bool:
    """A path-like id (``./x``, ``/x``, ``~/x``) that must exist locally rather than on the hub."""
    return path.startswith((".", "/", "~")) or Path(path).exists()


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached, or None. One connection attempt of at most a few
    seconds: without a network, huggingface_hub retries every file for about a minute first."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if urllib.request.getproxies():
        return None  # behind a proxy, a direct connection proves nothing: let the hub client try
    url = urllib.parse.urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_S).close()
    except OSError as exc:
        return f"no connection to {url.hostname}:{port}: {exc.strerror or exc}"
    return None


def load_pretrained(loader: Callable[..., T], path: str, what: str, **kwargs: Any) -> T:
    """Call ``loader(path, **kwargs)`` (a ``from_pretrained``); failures become one clear line.
    A hub id while the hub is unreachable is read from the local hub cache only, or refused at
    once."""
    if looks_local(path) and not Path(path).expanduser().exists():
        raise ModelError(f"{what} {path!r}: no such directory")
    offline = None if looks_local(path) else hub_unreachable()
    if offline:
        kwargs["local_files_only"] = True
    kwargs.setdefault("trust_remote_code", False)
    if kwargs["trust_remote_code"]:
        log.warning("--trust-remote-code: code shipped with %s will run on this machine", path)
    try:
        return loader(str(Path(path).expanduser()) if looks_local(path) else path, **kwargs)
    except OSError as exc:
        if looks_local(path):
            raise ModelError(f"{what} {path!r}: cannot be loaded ({exc})") from exc
        if offline:
            raise ModelError(
                f"{what} {path!r}: not a local directory, not in the local hub cache, and the "
                f"Hugging Face hub is unreachable ({offline}); download it elsewhere and pass the "
                "local directory (e.g. --model NAME=KIND:./local-dir)"
            ) from exc
        raise ModelError(
            f"{what} {path!r}: not a local directory and the Hugging Face hub is unreachable or "
            f"has no such repo ({type(exc).__name__}). Download it elsewhere and pass the local "
            f"directory instead (e.g. --model NAME=KIND:./local-dir)"
        ) from exc
    except SafetensorError as exc:  # a truncated or corrupt download: name the files to replace
        files = (sorted(p.name for p in Path(path).expanduser().glob("*.safetensors"))
                 if looks_local(path) else [])
        raise ModelError(
            f"{what} {path!r}: weight file {', '.join(files) or '*.safetensors'} unreadable "
            f"({exc}); expected a complete safetensors file: the download may be truncated or "
            "corrupt, fetch it again"
        ) from exc
    except (ValueError, KeyError, RuntimeError) as exc:
        # transformers' own message points at a silenced log
        if "ignore_mismatched_sizes" in str(exc):
            raise ModelError(_size_mismatch(loader, path, what, kwargs)) from exc
        raise ModelError(f"{what} {path!r}: cannot be loaded: {exc}") from exc


def _size_mismatch(
    loader: Callable[..., Any], path: str, what: str, kwargs: dict[str, Any]
) -> str:
    """Name the first weight whose shape disagrees with config.json (found by loading once more,
    tolerantly, on the error path only)."""
    try:
        tolerant = {**kwargs, "ignore_mismatched_sizes": True, "output_loading_info": True}
        _, info = loader(str(Path(path).expanduser()), **tolerant)
        key, stored, expected = sorted(info["mismatched_keys"])[0]
        detail = (f"weight {key} has shape {list(stored)} in the checkpoint, config.json implies "
                  f"{list(expected)}")
    except Exception as exc:  # noqa: BLE001 - only refines a message; the original error stands
        detail = f"tensor shapes disagree with config.json ({type(exc).__name__})"
    return (f"{what} {path!r}: config.json does not match the weights: {detail}; fix the config's "
            "sizes")


def load_weights(loader: Callable[..., Any], path: str, what: str, **kwargs: Any) -> Any:
    """``load_pretrained`` for a model, refusing one that would run with weights it did not load.

    transformers fills a weight missing from the checkpoint with random numbers and only logs it (a
    class that files the language model elsewhere, e.g. ``model.text_model``, loads as random);
    here every missing or unexpected key is an error, except a missing weight tied to a loaded one.
    A checkpoint whose ``model_type`` is not the class's (transformers converts the config) is
    refused.
    """
    model, info = load_pretrained(loader, path, what, output_loading_info=True, **kwargs)
    check_model_type(model, path, what, kwargs.get("trust_remote_code", False))
    check_loading_info(model, info, path, what)
    return model


def check_model_type(model: Any, path: str, what: str, trust_remote_code: bool = False) -> None:
    """The checkpoint's config.json ``model_type`` must be the one the built class belongs to."""
    from transformers import PreTrainedConfig

    source = str(Path(path).expanduser()) if looks_local(path) else path
    stored = PreTrainedConfig.get_config_dict(source, trust_remote_code=trust_remote_code)[0]
    stored = stored.get("model_type")
    built = type(model.config).model_type  # the instance keeps the checkpoint's value
    if stored and stored != built:
        raise ModelError(
            f"{what} {path!r}: config.json has model_type {stored!r} but {type(model).__name__} is "
            f"for {built!r}; "
            "pass it with the kind made for it (vlm: for an image-text model, see `iaa-eval tasks`)"
        )


def _shares_loaded_storage(model: Any, missing: set[str]) -> set[str]:
    """Missing names whose tensor is the very tensor of a loaded one (tied embeddings). A tensor
    offloaded by a device map is on ``meta`` without storage: there only identity ties."""
    tensors = dict(model.state_dict(keep_vars=True))

    def storage(t: torch.Tensor) -> int:
        return id(t) if t.device.type == "meta" else t.data_ptr()

    loaded = {storage(tensors[k]) for k in tensors if k not in missing}
    return {k for k in missing if k in tensors and storage(tensors[k]) in loaded}


def check_loading_info(model: Any, info: dict[str, Any], path: str, what: str) -> None:
    """Refuse missing (random) or unexpected (ignored) weights, listing them."""
    missing = set(info.get("missing_keys") or ())
    missing -= _shares_loaded_storage(model, missing)
    unexpected = set(info.get("unexpected_keys") or ())
    refuse_unmatched(type(model).__name__, missing, unexpected, path, what)


def refuse_unmatched(
    architecture: str, missing: set[str], unexpected: set[str], path: str, what: str
) -> None:
    """One line listing the weights a checkpoint lacks (they would be random) and those it has that
    ``architecture`` does not use; nothing when both are empty. Every loader refuses through it."""
    problems = []
    for label, keys in (("missing from the checkpoint (they would be random)", missing),
                        ("in the checkpoint but not used by the model", unexpected)):
        if keys:
            shown = sorted(keys)
            more = f" and {len(shown) - 6} more" if len(shown) > 6 else ""
            problems.append(f"{len(shown)} weights {label}: {', '.join(shown[:6])}{more}")
    if problems:
        raise ModelError(
            f"{what} {path!r}: the weights do not match {architecture}: "
            f"{'; '.join(problems)}; "
            "expected a checkpoint saved by this architecture"
        )


def check_vocabulary(tokenizer: Any, embedding_rows: int, path: str) -> None:
    """A tokenizer that emits ids beyond the embedding table would index out of range."""
    if len(tokenizer) > embedding_rows:
        raise ModelError(
            f"{path}: tokenizer has {len(tokenizer)} tokens but the model's embedding has only "
            f"{embedding_rows} rows; the tokenizer does not belong to this model"
        )


def place(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """Move to ``device`` in eval mode, with a clear error for a device that is not there."""
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"--device {device!r}: not available here ({exc})") from exc
