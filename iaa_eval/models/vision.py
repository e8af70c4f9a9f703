"""Image preprocessing shared by the adapters, and the per-run vision-feature cache.

Images are always preprocessed by an image processor's PIL backend (:func:`pil_image_processor`).

LLaVA-1.5 / IAA preprocessing (``image_aspect_ratio = "pad"``): pad to a square with the CLIP
mean colour, the original centred, then the CLIP image processor (resize, crop, normalise).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from iaa_eval.errors import DataError, ModelError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image


def pad_colour(image_mean: Sequence[float]) -> tuple[int, int, int]:
    """The fill colour: the processor's mean times 255, truncated ((122, 116, 104) for CLIP)."""
    r, g, b = (int(x * 255) for x in image_mean)
    return (r, g, b)


def expand_to_square(image: Image, fill: tuple[int, int, int]) -> Image:
    """Pad to side max(W, H), pasting the original centred (offset (max - min) // 2)."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = PILImage.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def pil_image_processor(image_processor: Any) -> Any:
    """``image_processor``, or its PIL twin with the same settings where it is torchvision-backed.

    transformers 5 picks the torchvision backend wherever torchvision is installed and PIL
    elsewhere; their resizes differ (CLIP: up to 2 8-bit steps), so the same checkpoint would
    answer from other pixels on a GPU machine than on a CPU one. PIL is what LLaVA-1.5 and the
    official IAA code preprocess with, and what every test here runs.
    """
    import transformers
    from transformers.image_processing_backends import TorchvisionBackend

    if not isinstance(image_processor, TorchvisionBackend):
        return image_processor
    name = f"{type(image_processor).__name__}Pil"
    twin = getattr(transformers, name, None)
    if twin is None:
        raise ModelError(f"image processor {type(image_processor).__name__}: transformers has no "
                         f"PIL twin ({name}) to preprocess with as everywhere else")
    settings = {k: v for k, v in image_processor.to_dict().items()
                if k not in ("image_processor_type", "processor_class")}
    return twin.from_dict(settings)


def decode_image(where: str, load: Callable[[], Image | None], max_pixels: int | None) -> Image:
    """The image ``load()`` opens, decoded fully (so a truncated file fails here, not inside the
    model) and refused above ``max_pixels`` (PIL's decompression-bomb limit by default); every
    failure is a DataError naming ``where``."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    limit = PILImage.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            img = load()
            if img is None:
                raise DataError(f"{where}: row without an image")
            if limit and img.size[0] * img.size[1] > limit:
                raise DataError(f"{where}: image of {img.size[0]}x{img.size[1]} pixels exceeds the "
                                f"{limit}-pixel limit (a decompression bomb?)")
            img.load()
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise DataError(f"{where}: image refused as a decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}: cannot decode the image ({exc})") from exc
    return img


def image_key(image: Image) -> str:
    """Content hash of an image (mode, size, pixels): the vision-feature cache key."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:24]


class FeatureCache:
    """Encodes each distinct image once per model per run (MME asks two questions per image,
    MMBench one per option rotation). ``encode`` maps a list of what it reads for an image (the
    adapter's preprocessed pixels or processor inputs) to features indexed by the first
    dimension; images are known by their content key (:func:`image_key`)."""

    def __init__(self, encode: Callable[[list[Any]], Sequence[torch.Tensor] | torch.Tensor],
                 max_items: int = 2048) -> None:
        self.encode = encode
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._store

    def get(self, inputs: Sequence[Any], keys: Sequence[str]) -> list[torch.Tensor]:
        """Features for each key, encoding from ``inputs`` only the keys not seen before (an
        input whose key is cached is not read)."""
        missing = {k: x for x, k in zip(inputs, keys, strict=True) if k not in self._store}
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            encoded = self.encode(list(missing.values()))
            for row, key in enumerate(missing):
                self._store[key] = encoded[row]
        out = []
        for key in keys:
            self._store.move_to_end(key)
            out.append(self._store[key])
        while len(self._store) > self.max_items:
            self._store.popitem(last=False)
        return out


class OncePerImage:
    """Stands in for a processor's image processor and processes each image object once.

    A processor is called per prompt so that prompts can be batched from cached features; the
    questions of one image (MMBench's four rotations, MME's two questions) would otherwise each
    resize and normalise it again. Results are keyed by the image object's identity, so the
    caller keeps the objects alive and calls :meth:`forget` when they go.
    """

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self._done: dict[int, tuple[Any, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, images: Any = None, **kwargs: Any) -> Any:
        flat = images
        while isinstance(flat, (list, tuple)) and len(flat) == 1:
            flat = flat[0]
        if isinstance(flat, (list, tuple)) or flat is None:  # several images: nothing to share
            return self.inner(images, **kwargs)
        if id(flat) not in self._done:
            self._done[id(flat)] = (flat, self.inner(images, **kwargs))
        return copy.copy(self._done[id(flat)][1])

    def forget(self) -> None:
        """Drop every result (and the images they were keyed by)."""
        self._done.clear()
