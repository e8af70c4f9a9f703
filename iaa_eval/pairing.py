"""Base-LM pairing: which LLM a public VLM was trained from, and a check that the two read alike.

Forgetting is the VLM's text score minus its base LM's, so the base must be the model the VLM's
language model started from (``iaa_eval/data/baselines/vlm_pairs.yaml``, each entry with its
source and whether the model card names that exact base). And both must see the same token ids for
the same prompt: if their tokenizers split the task prompts differently, the delta would compare
different inputs. :func:`pair_vlm` adds the base to a run and checks both before anything is
evaluated.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

from iaa_eval import config
from iaa_eval.errors import DataError, ModelError, UsageError
from iaa_eval.models.base import ModelSpec
from iaa_eval.resources import BASELINES

log = logging.getLogger(__name__)
DEFAULT_PAIRS = BASELINES / "vlm_pairs.yaml"
_HUB_CACHE = re.compile(r"models--([^/]+?)--([^/]+)")


@dataclass(frozen=True)
class VLMPair:
    """One entry of ``vlm_pairs.yaml``.

    ``relation`` initialised_from: the VLM's LM started from ``base``'s weights and was trained
    further; joint: the LM was trained with images from the start, so no text-only base exists
    (``base`` is None exactly then).
    """

    vlm: str
    base: str | None
    relation: Literal["initialised_from", "joint"]
    verified: bool
    source: config.NonBlank
    note: str = ""

    def __post_init__(self) -> None:
        if (self.base is None) != (self.relation == "joint"):
            raise ValueError(f"base: null exactly when relation is joint, got {self.base!r}")


@dataclass(frozen=True)
class VLMPairsFile:
    """The shape of ``vlm_pairs.yaml``."""

    version: Literal[1]
    pairs: tuple[VLMPair, ...]


@dataclass(frozen=True)
class TokenizerCheck:
    """How many sampled task prompts the base and VLM tokenizers turn into different token ids."""

    prompts: int
    mismatched: int
    first: str | None = None

    @property
    def rate(self) -> float:
        """Fraction of the sampled prompts split differently."""
        return self.mismatched / self.prompts if self.prompts else 0.0


def hub_id(path: str) -> str:
    """``org/name`` for a hub id, a hub-cache snapshot or a local folder ending in ``org/name``
    (lower case), so one model matches however it was passed."""
    cached = _HUB_CACHE.search(path)
    if cached:
        return f"{cached[1]}/{cached[2]}".lower()
    parts = PurePath(path.rstrip("/")).parts
    return "/".join(parts[-2:]).lower()


def load_pairs(path: Path | str = DEFAULT_PAIRS) -> tuple[VLMPair, ...]:
    """Read the pairs file (:class:`VLMPairsFile`, strictly) and check that no VLM is listed
    twice."""
    pairs = config.load(VLMPairsFile, path).pairs
    seen: dict[str, int] = {}
    for i, pair in enumerate(pairs):
        if hub_id(pair.vlm) in seen:
            raise DataError(f"{path}: pairs[{i}].vlm: {pair.vlm!r} repeats "
                            f"pairs[{seen[hub_id(pair.vlm)]}]")
        seen[hub_id(pair.vlm)] = i
    return pairs


def find_pair(vlm: str, pairs: Sequence[VLMPair]) -> VLMPair | None:
    """The entry for ``vlm`` (exact, else by :func:`hub_id`), or None."""
    exact = [p for p in pairs if p.vlm == vlm]
    return exact[0] if exact else next((p for p in pairs if hub_id(p.vlm) == hub_id(vlm)), None)


def base_from_pairs(vlm: str, path: Path | str = DEFAULT_PAIRS) -> VLMPair:
    """The pair naming ``vlm``'s base LM; a one-line error when there is none to compare against."""
    pair = find_pair(vlm, load_pairs(path))
    if pair is None:
        raise UsageError(f"--vlm {vlm!r}: not in {path}, so its base LM is unknown; pass --base "
                         "with the LM it was trained from")
    if pair.base is None:
        raise UsageError(f"--vlm {vlm!r}: {path} says its LM was trained jointly with vision, so "
                         f"it has no text-only base ({pair.note}); pass --base to compare "
                         "against a model of your choice")
    return pair


def compare_tokenizers(base: Any, vlm: Any, prompts: Sequence[str]) -> TokenizerCheck:
    """Token ids of every prompt under both tokenizers (special tokens added, as the text view
    adds them)."""
    ids_a = base(list(prompts))["input_ids"]
    ids_b = vlm(list(prompts))["input_ids"]
    differ = [p for p, a, b in zip(prompts, ids_a, ids_b, strict=True) if list(a) != list(b)]
    return TokenizerCheck(len(prompts), len(differ), differ[0][:80] if differ else None)


def _tokenizer(spec: ModelSpec) -> Any:
    """The tokenizer of ``spec`` (one-line errors; a hub id fails at once without a network)."""
    from transformers import AutoTokenizer

    from iaa_eval.models.loading import load_pretrained

    return load_pretrained(AutoTokenizer.from_pretrained, spec.path, f"{spec.name} tokenizer",
                           trust_remote_code=spec.trust_remote_code)


def _text_prompts(tasks: Sequence[Any], per_subject: int) -> list[str]:
    from iaa_eval.tasks import TASKS
    from iaa_eval.tasks.text import sample_prompts

    prompts: list[str] = []
    for task in tasks:
        if TASKS.get(task.name).modality == "text":
            prompts += sample_prompts(task.name, task.options, per_subject)
    return list(dict.fromkeys(prompts))


def check_tokenizers(base: ModelSpec, vlm: ModelSpec, tasks: Sequence[Any], allow_mismatch: bool,
                     per_subject: int = 1) -> TokenizerCheck:
    """Refuse (or, with ``allow_mismatch``, log) a pair whose tokenizers split the task prompts
    differently."""
    check = compare_tokenizers(_tokenizer(base), _tokenizer(vlm), _text_prompts(tasks, per_subject))
    if check.mismatched:
        message = (f"tokenizers of {base.name} ({base.path}) and {vlm.name} ({vlm.path}) split "
                   f"{check.mismatched} of {check.prompts} sampled text prompts differently "
                   f"(first: {check.first!r})")
        if not allow_mismatch:
            raise ModelError(f"{message}; their text scores would compare different inputs. Pass "
                             "--allow-tokenizer-mismatch to run anyway (the rate goes into "
                             "results.json)")
        log.warning("%s; running anyway (--allow-tokenizer-mismatch)", message)
    else:
        log.info("tokenizers of %s and %s agree on %d sampled text prompts", base.name, vlm.name,
                 check.prompts)
    return check


def pair_vlm(models: Sequence[ModelSpec], vlm_name: str | None, tasks: Sequence[Any],
             pairs_path: Path | str | None,
             allow_mismatch: bool) -> tuple[list[ModelSpec], dict[str, Any] | None]:
    """The run's models with ``vlm_name``'s base added when none was given, and what to record.

    Nothing changes without a VLM (None) or a text task (only forgetting needs a base). The record
    goes into results.json's ``config.pairing``: ``base_from`` (``vlm_pairs`` or ``--base``), the
    pairs-file ``entry`` and the tokenizer check. ``pairs_path`` None: the shipped file.
    """
    from iaa_eval.tasks import TASKS

    if vlm_name is None or not any(TASKS.get(t.name).modality == "text" for t in tasks):
        return list(models), None
    pairs_path = pairs_path or DEFAULT_PAIRS
    vlm = next(m for m in models if m.name == vlm_name)
    bases = [m for m in models if m.kind == "hf"]
    record: dict[str, Any] = {"base_from": "--base", "entry": None}
    if bases:
        pair = find_pair(vlm.path, load_pairs(pairs_path))
        listed = pair.base if pair is not None else None
        if listed is not None and hub_id(listed) != hub_id(bases[0].path):
            log.warning("--base %s: %s lists %s as the base of %s", bases[0].path,
                        Path(pairs_path).name, listed, vlm.path)
    else:
        pair = base_from_pairs(vlm.path, pairs_path)
        state = "verified" if pair.verified else "UNVERIFIED: the source does not name this base"
        (log.info if pair.verified else log.warning)(
            "--vlm %s: base LM %s taken from %s (%s; %s)", vlm.path, pair.base,
            Path(pairs_path).name, state, pair.source)
        if any(m.name == "base" for m in models):
            raise UsageError("--vlm: the paired base LM is named 'base', but a model of that name "
                             "is given")
        bases = [dataclasses.replace(vlm, name="base", kind="hf", path=str(pair.base))]
        models = bases + list(models)
        record = {"base_from": "vlm_pairs", "entry": dataclasses.asdict(pair)}
    check = check_tokenizers(bases[0], vlm, tasks, allow_mismatch)
    record["tokenizers"] = {**dataclasses.asdict(check), "rate": check.rate}
    return list(models), record
