"""Scoring rules: pure functions, no torch (official MME, MMBench, VQAv2 rules; paired
statistics)."""
