"""Shared loading helpers: dtype/device resolution, safe ``from_pretrained``, vocabulary checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from iaa_eval.errors import ModelError

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def load_pretrained(loader: Callable[..., T], path: str, what: str, **kwargs: Any) -> T:
    """Call ``loader(path, **kwargs)`` (a ``from_pretrained``) and turn failures into one clear line."""
    if looks_local(path) and not Path(path).expanduser().exists():
        raise ModelError(f"{what} {path!r}: no such directory")
    kwargs.setdefault("trust_remote_code", False)
    if kwargs["trust_remote_code"]:
        log.warning("--trust-remote-code: code shipped with %s will run on this machine", path)
    try:
        return loader(str(Path(path).expanduser()) if looks_local(path) else path, **kwargs)
    except OSError as exc:
        if looks_local(path):
            raise ModelError(f"{what} {path!r}: cannot be loaded ({exc})") from exc
        raise ModelError(
            f"{what} {path!r}: not a local directory and the Hugging Face hub is unreachable or has no such "
            f"repo ({type(exc).__name__}). Download it elsewhere and pass the local directory instead "
            f"(e.g. --model NAME=KIND:./local-dir)"
        ) from exc
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"{what} {path!r}: cannot be loaded: {exc}") from exc


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
