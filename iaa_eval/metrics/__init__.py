"""Metrics: pure functions over lists and dicts, no torch (so reports and the gate stay light)."""
