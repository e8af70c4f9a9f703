"""iaa-eval: what multimodal training cost a language model, and what it bought."""

__version__ = "0.1.0"
