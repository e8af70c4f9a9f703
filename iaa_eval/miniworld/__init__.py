"""The mini-world: an embedded default trio (base, LLaVA-style, IAA) and its data, in real formats."""
