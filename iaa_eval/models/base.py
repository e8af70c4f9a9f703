"""The contract every model family meets: a text view, multimodal generation, a fingerprint.

A *text view* is the tokenizer + causal LM that text tasks score (for a LLaVA-style model: its
language model and head, which is where forgetting shows). The multimodal entry points take an
image (or ``None`` for the blind baseline) and the user's prompt; each adapter applies its own
conversation template. The fingerprint keys the request cache: equal fingerprints mean equal
answers, which is how IAA's text workflow shares the base model's text results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from iaa_eval.names import path_name

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WORKFLOWS = ("text", "mm", "g")


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for on the command line: ``--model NAME=KIND:PATH`` plus runtime flags.

    Args:
        name: label used in results and reports (``base``, ``llava``, ``iaa``, ...).
        kind: registry name of the adapter (``hf``, ``llava``, ``iaa``).
        path: hub id or local directory.
        device: ``cpu``, ``cuda``, ``cuda:1`` ...
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        batch_size: a positive int, or ``"auto"`` to size from free memory.
        trust_remote_code: passed to every ``from_pretrained``; off unless the user asks.
        device_map: ``auto``, ``balanced``, ``balanced_low_0`` or ``sequential``: split the model
            over every visible GPU (then the CPU) through accelerate, for a model larger than one
            GPU (:mod:`~iaa_eval.models.placement`); ``device`` then places nothing.
        max_memory: with ``device_map``, the most each device may hold, e.g.
            ``{"0": "70GiB", "cpu": "200GiB"}`` (GPU indices as strings).
        decode: ``dynamic`` (transformers' growing KV cache) or ``static`` (a fixed-size one, the
            decode step compiled with CUDA graphs on CUDA; same answers):
            :class:`~iaa_eval.models.generation.StaticDecode`.
    """

    name: str
    kind: str
    path: str
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int | str = 8
    trust_remote_code: bool = False
    device_map: str | None = None
    max_memory: dict[str, str] | None = None
    decode: str = "dynamic"

    def __post_init__(self) -> None:
        path_name(self.name, "model name")


@dataclass(frozen=True)
class TextView:
    """A tokenizer and a causal LM whose ``forward(input_ids, attention_mask=...,
    past_key_values=..., use_cache=...)`` returns ``.logits`` of shape ``(batch, seq, vocab)``."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fingerprint: str


@dataclass(frozen=True)
class MMRequest:
    """One multimodal question.

    Args:
        prompt: the user's text, without any image placeholder (the adapter inserts it).
        image: the image, or ``None`` to ask blind.
        image_key: stable id of the image (e.g. a content hash) for the vision-feature cache.
        max_new_tokens: greedy decoding budget.
    """

    prompt: str
    image: Image | None = None
    image_key: str | None = None
    max_new_tokens: int = 16


@runtime_checkable
class EvalModel(Protocol):
    """What the runner needs of a model. Attributes: ``spec``, ``supports_images``."""

    spec: ModelSpec
    supports_images: bool

    def text_view(self) -> TextView:
        """The tokenizer + causal LM used for text tasks (MMLU, C-Eval)."""
        ...

    def generate(self, requests: Sequence[MMRequest]) -> list[str]:
        """Greedy answers, one string per request, special tokens stripped.

        Example: ``model.generate([MMRequest("Is there a dog? Please answer yes or no.", img)])``
        -> ``["Yes"]``. A request with ``image=None`` is answered blind (text only).
        """
        ...

    def fingerprint(self, workflow: str) -> str:
        """Stable hex digest of config + weights + workflow (``"text"`` or ``"mm"``)."""
        ...


_HOST_CHUNK_BYTES = 1 << 26  # 64 MiB: what a tensor held elsewhere (CUDA) copies to host at a time


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    """SHA-256 of every byte of a tensor (its contiguous form). CPU bytes are hashed in place; a
    tensor on another device reaches the host 64 MiB at a time, never as a second whole copy. No
    sampling: two weight sets that differ in one element of one tensor must never share a digest,
    since equal fingerprints are how IAA takes the base model's text results as its own."""
    import torch

    raw = tensor.detach().reshape(-1).contiguous().view(torch.uint8)
    digest = hashlib.sha256()
    for start in range(0, raw.numel(), _HOST_CHUNK_BYTES):
        digest.update(raw[start : start + _HOST_CHUNK_BYTES].cpu().numpy())
    return digest.digest()


def fingerprint_weights(
    config: Mapping[str, Any], named_tensors: Mapping[str, torch.Tensor], workflow: str
) -> str:
    """Digest of a config dict, named tensors (every byte of each) and the workflow.

    Keys that do not change the computation (names, paths, dtype labels, versions) are dropped
    from the config so the same weights loaded from two folders hash the same. Tensors are hashed
    on torch's thread count (hashlib releases the GIL), so an 8B model takes seconds, not a minute.
    """
    import torch

    ignored = {"_name_or_path", "architectures", "torch_dtype", "dtype", "transformers_version",
               "auto_map"}
    clean = {k: v for k, v in sorted(config.items()) if k not in ignored}
    digest = hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode())
    digest.update(workflow.encode())
    names = sorted(named_tensors)
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        tensor_digests = pool.map(_tensor_digest, [named_tensors[name] for name in names])
        for name, tensor_digest in zip(names, tensor_digests, strict=True):
            tensor = named_tensors[name]
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor_digest)
    return digest.hexdigest()[:16]


def resident_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, wherever accelerate put it: one offloaded by a device
    map (``meta`` in the model, its weights kept elsewhere until a forward) is read from the store
    its hook fetches it from, so a fingerprint sees the weights the model computes with."""
    from accelerate.utils import has_offloaded_params

    tensors = dict(model.state_dict(keep_vars=True))
    for prefix, module in model.named_modules():
        if not has_offloaded_params(module):
            continue
        store = module._hf_hook.weights_map
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in own:
            full = f"{prefix}.{name}" if prefix else name
            if tensor.device.type == "meta" and full in tensors:
                tensors[full] = store[name]
    return tensors


_ARCHITECTURE_FIELDS = (
    "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_theta",
    "rope_parameters", "rope_scaling", "hidden_act", "max_position_embeddings", "attention_bias",
    "mlp_bias", "sliding_window", "tie_word_embeddings",
)


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """Digest of a tokenizer's vocabulary and special tokens (what changes the token ids)."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items())
    payload = json.dumps([vocab, special, tokenizer.padding_side], ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def text_model_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """Fingerprint of a causal LM as a text model: architecture fields, weights and tokenizer.

    Only architecture fields enter, so IAA's text workflow (the very same frozen Llama) hashes
    like the base model it was built from, and their text results are shared.
    """
    full = model.config.to_dict()
    config = {k: full.get(k) for k in _ARCHITECTURE_FIELDS}
    config["tokenizer"] = tokenizer_digest(tokenizer)
    return fingerprint_weights(config, resident_tensors(model), "text")
