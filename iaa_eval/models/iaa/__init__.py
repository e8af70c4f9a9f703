"""The IAA model, implemented natively on transformers' own decoder modules."""

from iaa_eval.models.iaa.configuration import IAAConfig
from iaa_eval.models.iaa.modeling import IAAForCausalLM

__all__ = ["IAAConfig", "IAAForCausalLM"]
