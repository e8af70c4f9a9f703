"""A VLM family's processor, built without torchvision where transformers' own builder needs it,
and the prompts rendered through it.

Without torchvision (no wheel works with the CPU torch this project installs) transformers cannot
build the composite processors of families that also handle video (Qwen-VL, InternVL, OneVision,
SmolVLM), nor import Mistral 3's (Pixtral's); we then build the family's slow (PIL) image
processor and the tokenizer directly and hand them to the processor class, with the processor's
own settings from ``processor_config.json``. Images are all we ask of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any

from iaa_eval.errors import ModelError
from iaa_eval.models.loading import load_pretrained, looks_local
from iaa_eval.models.templates import SYSTEM_PROMPT, build_prompt

log = logging.getLogger(__name__)


def _processor_settings(path: str) -> dict[str, Any]:
    """The processor's own settings (``processor_config.json``), less the parts it is built of."""
    file = Path(path).expanduser() / "processor_config.json"
    if not looks_local(path):
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(path, "processor_config.json"))
        except Exception:  # noqa: BLE001 - the file is optional: defaults apply
            return {}
    if not file.exists():
        return {}
    settings = json.loads(file.read_text())
    return {
        k: v for k, v in settings.items() if not k.endswith("_processor") and k != "processor_class"
    }


def _processor_class(name: str) -> type:
    """The processor class called ``name``. transformers 5's ``processing_pixtral`` imports one
    helper (``get_resize_output_image_size``, for token counts) from the torchvision image
    processor's module; the PIL image processor's module defines the same function, so where
    torchvision is missing that one import is served from it, for the duration of the import."""
    import transformers

    if name != "PixtralProcessor" or importlib.util.find_spec("torchvision") is not None:
        return getattr(transformers, name)
    package = "transformers.models.pixtral"
    fast = f"{package}.image_processing_pixtral"
    sys.modules[fast] = importlib.import_module(f"{package}.image_processing_pil_pixtral")
    try:
        return importlib.import_module(f"{package}.processing_pixtral").PixtralProcessor
    finally:
        del sys.modules[fast]


def _without_video(cls: type) -> type:
    """The processor class, accepting ``video_processor=None``: ProcessorMixin checks each part's
    class through a registry that exists only with torchvision, which an absent part never needs."""

    def check_argument_for_proper_class(self: Any, name: str, argument: Any) -> Any:
        if name == "video_processor" and argument is None:
            return None
        return cls.check_argument_for_proper_class(self, name, argument)

    return type(
        cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class}
    )


def build_processor(path: str, model_type: str, trust_remote_code: bool = False) -> Any:
    """The family's processor: ``AutoProcessor`` when it can be built here, else the processor
    class assembled from the slow image processor and the tokenizer (see the module docstring)."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    try:
        return load_pretrained(
            AutoProcessor.from_pretrained, path, "processor", trust_remote_code=trust_remote_code
        )
    except (ModelError, ImportError, ValueError, TypeError) as exc:
        reason = _first_line(exc)
    log.info(
        "processor of %s: AutoProcessor unavailable (%s); assembling it from its parts",
        path,
        reason,
    )
    cls = _processor_class(PROCESSOR_MAPPING_NAMES[model_type])
    tokenizer = load_pretrained(
        AutoTokenizer.from_pretrained, path, "tokenizer", trust_remote_code=trust_remote_code
    )
    images = load_pretrained(
        AutoImageProcessor.from_pretrained,
        path,
        "image processor",
        backend="pil",
        trust_remote_code=trust_remote_code,
    )
    parts: dict[str, Any] = {"image_processor": images, "tokenizer": tokenizer}
    if "video_processor" in inspect.signature(cls.__init__).parameters:
        parts["video_processor"] = None
        cls = _without_video(cls)
    settings = _processor_settings(path)
    try:
        return cls(**parts, chat_template=tokenizer.chat_template, **settings)
    except (ImportError, ValueError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"processor {path!r}: {cls.__name__} cannot be built here ({_first_line(exc)}); "
            f"AutoProcessor: {reason}"
        ) from exc


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def render_prompt(processor: Any, text: str, has_image: bool, system: bool) -> str:
    """The prompt up to the answer: the processor's chat template (an image part first, as the
    families' model cards ask), else the plain template with the processor's image token. The
    template is rendered by the tokenizer: some processors' own ``apply_chat_template`` reads
    their video processor, which is absent without torchvision."""
    if template := getattr(processor, "chat_template", None):
        content = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": text})
        messages = (
            [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}]
            if system
            else []
        )
        messages.append({"role": "user", "content": content})
        return processor.tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
    return build_prompt(
        processor.tokenizer, text, processor.image_token if has_image else None, system=system
    )
