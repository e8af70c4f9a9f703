"""The mini-world: an embedded default trio (base, LLaVA-style, IAA) and its data, in real formats."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"  # the shipped trio, its data and manifest.json
