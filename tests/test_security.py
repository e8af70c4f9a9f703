"""Forbidden patterns cannot creep back into the package (issue 8: no remote code, safe loading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "iaa_eval"
SOURCES = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
TEMPLATES = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.j2")}

FORBIDDEN = {
    "shell=True": re.compile(r"shell\s*=\s*True"),
    "trust_remote_code=True literal": re.compile(r"trust_remote_code\s*=\s*True"),
    "unsafe yaml.load": re.compile(r"yaml\.load\((?![^)]*Loader\s*=\s*yaml\.SafeLoader)"),
    "pickle": re.compile(r"^\s*(import pickle|from pickle)", re.M),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\("),
    "autoescape off": re.compile(r"autoescape\s*=\s*False"),
    "|safe filter": re.compile(r"\|\s*safe\b"),
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_no_forbidden_pattern(name: str) -> None:
    pattern = FORBIDDEN[name]
    hits = [f"{p.relative_to(PACKAGE)}" for p, text in {**SOURCES, **TEMPLATES}.items() if pattern.search(text)]
    assert hits == [], f"{name} found in {hits}"


def test_every_torch_load_is_weights_only() -> None:
    for path, text in SOURCES.items():
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in match.group(1), f"{path.name}: {match.group(0)}"


def test_every_from_pretrained_passes_trust_remote_code_or_goes_through_load_pretrained() -> None:
    """Our own IAA classes load only safetensors and never run shipped code; every HF loader says so."""
    for path, text in SOURCES.items():
        for match in re.finditer(r"(?<!IAAForCausalLM)(?<!IAAConfig)\.from_pretrained\(([^()]*(?:\([^()]*\))?[^()]*)\)", text):
            args = match.group(1)
            assert "trust_remote_code" in args or "load_pretrained" in text[max(0, match.start() - 40) : match.start()], (
                f"{path.relative_to(PACKAGE)}: {match.group(0)[:80]} does not pass trust_remote_code"
            )
