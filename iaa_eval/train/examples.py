"""What the training stages learn from: one supervised multimodal example per :class:`Example`.

Prompts come from :mod:`iaa_eval.models.templates` at encoding time, exactly as at evaluation time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class Example:
    """One supervised multimodal example: ``image`` (or ``None`` for text only), the user's
    ``prompt`` (no image placeholder: the model's template adds it) and the expected ``answer``.

    ``image`` is a decoded PIL image, or a path opened only when its batch is encoded (see
    :func:`example_image`), so that a large training set never holds its images in memory.
    """

    image: Image | str | os.PathLike | None
    prompt: str
    answer: str


def example_image(example: Example) -> Image:
    """The example's image: as given if already decoded, else opened from its path, decoded fully
    and converted to RGB (an unreadable file or a decompression bomb is a DataError naming it)."""
    from PIL import Image as PILImage

    from iaa_eval.models.vision import decode_image

    if example.image is None:
        raise ValueError(f"example {example.prompt[:40]!r} has no image")
    if isinstance(example.image, PILImage.Image):
        return example.image
    path = Path(example.image)
    return decode_image(str(path), lambda: PILImage.open(path), max_pixels=None).convert("RGB")
