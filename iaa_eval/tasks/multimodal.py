"""Plumbing shared by the multimodal tasks (MME, MMBench, VQAv2), written once.

Loaders turn benchmark rows into :class:`Item` objects whose images are opened lazily (VQAv2's
val set is 40k images): a missing image, a path leaving the data folder or an undecodable image
is a :class:`~iaa_eval.errors.DataError` naming the file and row, or, with ``on_error="skip"``,
a counted skip recorded in the result (:class:`Problems`). :func:`ask` turns the items into
generation requests, chunk by chunk, and :func:`generate` sends them down the task's request
path; blind runs never open an image.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iaa_eval.errors import DataError, UsageError
from iaa_eval.models.base import MMRequest
from iaa_eval.models.vision import decode_image, image_key
from iaa_eval.rundir import SampleRecord, TaskResult
from iaa_eval.runner.cache import request_key

if TYPE_CHECKING:
    from iaa_eval.tasks.context import TaskContext

logger = logging.getLogger(__name__)
# items per generate call: bounds the decoded images held at once (this chunk and the next, being
# opened); the adapters batch within it (an 8B LLaVA on an H200: 16-18 requests/s at 16, 27-40
# at 64)
CHUNK = 512
# generation requests per rank per cache transaction: what an interrupted run can lose at most
GENERATE_COMMIT = CHUNK


class Problems:
    """The ``on_error`` policy: raise at the first bad row, or count and record it."""

    def __init__(self, on_error: str) -> None:
        if on_error not in ("raise", "skip"):
            raise UsageError(f"--on-error {on_error!r}: expected 'raise' or 'skip'")
        self.skip = on_error == "skip"
        self.reasons: list[str] = []

    def report(self, message: str) -> None:
        """Raise ``DataError(message)``, or record it as a skip."""
        if not self.skip:
            raise DataError(message)
        self.reasons.append(message)


@dataclass(frozen=True)
class ImageSource:
    """Where an item's image comes from: a file, encoded bytes, or ``fetch()`` (a hub row)."""

    where: str
    path: Path | None = None
    data: bytes | None = None
    fetch: Callable[[], Any] | None = None

    def open(self, max_pixels: int | None) -> Any:
        """Decode fully and refuse images above ``max_pixels`` (see :func:`decode_image`)."""
        return decode_image(self.where, self._load, max_pixels)

    def _load(self) -> Any:
        from PIL import Image

        if self.fetch is not None:
            return self.fetch()
        return Image.open(self.path if self.path is not None else io.BytesIO(self.data or b""))


@dataclass
class Item:
    """One question: ``prompt`` is the user text without an image placeholder."""

    doc_id: str
    prompt: str
    target: str
    source: ImageSource | None
    meta: dict[str, Any] = field(default_factory=dict)


def inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refusing paths that leave ``root`` (``../``, absolute) or do not
    exist."""
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise DataError(f"{where}: image path {relative!r} leaves the data folder {root}")
    if not path.is_file():
        raise DataError(f"{where}: image file {path} not found")
    return path


def b64_image(text: str, where: str) -> ImageSource:
    """An image stored as base64 text (the MMBench TSV layout)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"{where}: image field is not valid base64 ({exc})") from exc
    return ImageSource(where, data=data)


def load_hub(path: str, name: str | None, split: str) -> Any:
    """A hub dataset through ``datasets.load_dataset``, failures named."""
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # offline, gated, renamed: say which dataset and how to avoid the hub
        label = f"{path}" + (f" ({name})" if name else "")
        raise DataError(f"hub dataset {label}, split {split!r}: cannot load ({exc}); "
                        "pass --data-dir with the original file layout instead") from exc


def hub_rows(dataset: Any, label: str,
             image_column: str = "image") -> Iterator[tuple[int, dict, ImageSource]]:
    """Rows of a hub dataset without decoding their images; each image is fetched when asked."""
    text_only = dataset.remove_columns([image_column])
    for i, row in enumerate(text_only):
        yield i, row, ImageSource(f"{label} row {i}", fetch=lambda i=i: dataset[i][image_column])


def option(extra: dict[str, Any], key: str, default: Any) -> Any:
    """A task setting from ``TaskOptions.extra``."""
    return extra.get(key, default)


def generation_key(request: MMRequest) -> str:
    """The request-cache key of a generation request: prompt, image content and budget."""
    image = None if request.image is None else request.image_key or image_key(request.image)
    prompt, budget = request.prompt, request.max_new_tokens
    return request_key({"op": "generate", "prompt": prompt, "image": image,
                        "max_new_tokens": budget})


def generate(ctx: TaskContext, requests: Sequence[MMRequest]) -> list[str]:
    """The model's greedy answers to ``requests``, through the task's request path. Blind, the
    images are dropped and the answers are keyed by the model's text fingerprint, so a question
    asked of many images (MME, VQAv2) is answered once."""
    if ctx.blind:
        requests = [dataclasses.replace(r, image=None, image_key=None) for r in requests]
    fingerprint = ctx.model.fingerprint("text" if ctx.blind else "mm")
    keys = [generation_key(r) for r in requests]
    return ctx.request_path.answer(
        fingerprint, keys, requests, ctx.model.generate, commit=GENERATE_COMMIT, progress=True
    )


def _opened(ctx: TaskContext, items: Sequence[Item], problems: Problems, max_new_tokens: int,
            max_pixels: int | None) -> tuple[list[Item], list[MMRequest]]:
    """The items whose image opens (each image decoded once) and their requests."""
    opened: dict[int, tuple[Any, str]] = {}
    kept, requests = [], []
    for item in items:
        image = key = None
        if item.source is not None and not ctx.blind:
            if id(item.source) not in opened:
                try:
                    img = item.source.open(max_pixels)
                except DataError as exc:
                    problems.report(str(exc))
                    continue
                opened[id(item.source)] = (img, image_key(img))
            image, key = opened[id(item.source)]
        kept.append(item)
        requests.append(MMRequest(item.prompt, image, key, max_new_tokens))
    return kept, requests


def ask(
    ctx: TaskContext, items: Sequence[Item], problems: Problems, max_new_tokens: int
) -> Iterator[tuple[Item, str]]:
    """Yield ``(item, response)``; items whose image cannot be opened are reported and left out.
    The next chunk's images are decoded (and hashed) in a background thread while the model
    answers this chunk."""
    max_pixels = option(ctx.options.extra, "max_image_pixels", None)
    with ThreadPoolExecutor(1, thread_name_prefix="images") as pool:

        def opening(start: int) -> Future | None:
            if start >= len(items):
                return None
            chunk = items[start : start + CHUNK]
            return pool.submit(_opened, ctx, chunk, problems, max_new_tokens, max_pixels)

        pending = opening(0)
        for start in range(0, len(items), CHUNK):
            kept, requests = pending.result()
            pending = opening(start + CHUNK)
            yield from zip(kept, generate(ctx, requests), strict=True)


@dataclass(frozen=True)
class Clock:
    """Wall time, the model's vision-feature cache counters and the time its generation had
    waited for host work (tokenizing, image preprocessing) when a task started."""

    t0: float
    hits: int
    misses: int
    host_wait: float


def start(ctx: TaskContext) -> Clock:
    """Start timing a task (and counting the feature-cache hits and host waits it causes)."""
    cache = getattr(ctx.model, "feature_cache", None)
    batcher = getattr(ctx.model, "batcher", None)
    return Clock(time.perf_counter(), getattr(cache, "hits", 0), getattr(cache, "misses", 0),
                 getattr(batcher, "host_seconds", 0.0))


def result(
    name: str, ctx: TaskContext, clock: Clock, problems: Problems, samples: list[SampleRecord],
    metrics: dict[str, float], primary: str, groups: dict[str, dict[str, float]],
    config: dict[str, Any],
) -> TaskResult:
    """A TaskResult with the shared bookkeeping filled in; timing and cache hits go to the log.

    No samples at all (an empty dataset, or every row skipped) is an error: scores of nothing
    would look like real zeros in results.json.
    """
    if not samples:
        source = ctx.options.data_dir or "the hub dataset"
        why = (f"all {len(problems.reasons)} rows skipped" if problems.reasons
               else "the dataset is empty")
        raise DataError(f"{source}: no {name} items to evaluate ({why}); expected at least one "
                        "question")
    now, cache = start(ctx), {}
    if getattr(ctx.model, "feature_cache", None) is not None:
        cache = {"feature_cache": {"hits": now.hits - clock.hits,
                                   "misses": now.misses - clock.misses}}
    wall, waited = now.t0 - clock.t0, now.host_wait - clock.host_wait
    logger.info("%s: %d samples, %d skipped, %.1fs (%.1fs of it waiting for host work: "
                "tokenizing, image preprocessing)%s", name, len(samples), len(problems.reasons),
                wall, waited, f", vision features: {cache['feature_cache']}" if cache else "")
    return TaskResult(
        task=name, metrics=metrics, primary=primary, n=len(samples), groups=groups,
        skipped=len(problems.reasons), skip_reasons=list(problems.reasons), blind=ctx.blind,
        task_config={"limit": ctx.options.limit, **config, **cache},
        requests=ctx.request_path.asked, cached_requests=ctx.request_path.cached, wall_s=wall,
        samples=samples,
    )


def first(items: Sequence[Item], limit: int | None,
          key: Callable[[Item], Any] | None = None) -> list[Item]:
    """The first ``limit`` items, or for a ``key``, every item of the first ``limit`` keys."""
    if limit is None:
        return list(items)
    if key is None:
        return list(items[:limit])
    wanted = set(list(dict.fromkeys(key(item) for item in items))[:limit])
    return [item for item in items if key(item) in wanted]
