"""The mini-world: an embedded default trio (base, LLaVA-style, IAA) and its data, in real
formats."""

from iaa_eval.resources import MINIWORLD_ASSETS

ASSETS = MINIWORLD_ASSETS  # the shipped trio, its data and manifest.json
