"""Base-LM pairing: strict pairs file, lookup, the tokenizer check, and `run --vlm` end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from iaa_eval.cli import main
from iaa_eval.errors import DataError, UsageError
from iaa_eval.miniworld import ASSETS
from iaa_eval.pairing import (
    DEFAULT_PAIRS,
    VLMPair,
    base_from_pairs,
    compare_tokenizers,
    find_pair,
    hub_id,
    load_pairs,
)
from tests.conftest import build_tokenizer, tiny_llama_config

GOOD = {"vlm": "org/vlm-7b", "base": "org/lm-7b", "relation": "initialised_from", "verified": True,
        "source": "https://example.org/card"}


def _write(tmp_path: Path, pairs: list[dict], version: object = 1) -> Path:
    path = tmp_path / "pairs.yaml"
    text = json.dumps({"version": version, "pairs": pairs})  # JSON is YAML
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_pairs_hold_the_required_entries() -> None:
    pairs = load_pairs()
    expected = {
        "Qwen/Qwen2-VL-7B-Instruct": "Qwen/Qwen2-7B-Instruct",
        "Qwen/Qwen2.5-VL-3B-Instruct": "Qwen/Qwen2.5-3B-Instruct",
        "Qwen/Qwen2.5-VL-7B-Instruct": "Qwen/Qwen2.5-7B-Instruct",
        "Qwen/Qwen2.5-VL-72B-Instruct": "Qwen/Qwen2.5-72B-Instruct",
        "OpenGVLab/InternVL2_5-8B": "internlm/internlm2_5-7b-chat",
        "llava-hf/llava-1.5-7b-hf": "lmsys/vicuna-7b-v1.5",
        "llava-hf/llava-1.5-13b-hf": "lmsys/vicuna-13b-v1.5",
        "llava-hf/llama3-llava-next-8b-hf": "meta-llama/Meta-Llama-3-8B-Instruct",
        "llava-hf/llava-v1.6-mistral-7b-hf": "mistralai/Mistral-7B-Instruct-v0.2",
        "llava-hf/llava-onevision-qwen2-7b-ov-hf": "Qwen/Qwen2-7B-Instruct",
        "HuggingFaceTB/SmolVLM-Instruct": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "qihoo360/360VL-8B": "meta-llama/Meta-Llama-3-8B-Instruct",
    }
    for vlm, base in expected.items():
        assert find_pair(vlm, pairs).base == base, vlm
    assert not find_pair("qihoo360/360VL-8B", pairs).verified
    assert not find_pair("deepseek-ai/deepseek-vl-7b-chat", pairs).verified
    gemma = find_pair("google/gemma-3-4b-it", pairs)
    assert gemma.relation == "joint" and gemma.base is None
    assert find_pair("mistralai/Mistral-Small-3.1-24B-Instruct-2503", pairs) is not None
    assert all(p.source.startswith("https://") for p in pairs)


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": "red"}, "pairs[0]: unknown key 'colour'"),
    ({"verified": "yes"}, "pairs[0].verified: expected true or false, got 'yes'"),
    ({"base": 7}, "pairs[0].base: expected a string, got 7"),
    ({"relation": "distilled"},
     "pairs[0].relation: expected one of 'initialised_from', 'joint', got 'distilled'"),
    ({"base": None}, "pairs[0]: base: null exactly when relation is joint, got None"),
    ({"relation": "joint"}, "pairs[0]: base: null exactly when relation is joint, got 'org/lm-7b'"),
    ({"source": " "}, "pairs[0].source: expected a non-blank string, got ' '"),
])
def test_strict_entries(tmp_path: Path, change: dict, message: str) -> None:
    path = _write(tmp_path, [{**GOOD, **change}])
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_strict_file(tmp_path: Path) -> None:
    missing = dict(GOOD)
    del missing["source"]
    cases = [
        ([missing], 1, "pairs[0]: missing key 'source'"),
        ([GOOD, {**GOOD, "vlm": "ORG/VLM-7B"}], 1, "pairs[1].vlm: 'ORG/VLM-7B' repeats pairs[0]"),
        ([GOOD], 2, "version: expected 1, got 2"),
    ]
    for pairs, version, message in cases:
        with pytest.raises(DataError, match=re.escape(message)):
            load_pairs(_write(tmp_path, pairs, version))
    odd = tmp_path / "odd.yaml"
    odd.write_text("version: 1\npairs: []\nextra: 1\n", encoding="utf-8")
    with pytest.raises(DataError, match="unknown key 'extra'; allowed: version, pairs"):
        load_pairs(odd)


def test_lookup_by_hub_id(tmp_path: Path) -> None:
    pairs = (VLMPair(**GOOD),)
    assert find_pair("org/vlm-7b", pairs) is pairs[0]
    assert find_pair("/data/hf/hub/models--org--vlm-7b/snapshots/0123abcd", pairs) is pairs[0]
    assert find_pair("/mnt/weights/Org/VLM-7B/", pairs) is pairs[0]
    assert find_pair("org/vlm-13b", pairs) is None
    assert hub_id("/x/models--a--b/snapshots/1") == "a/b" == hub_id("A/B")


def test_missing_or_joint_pair_is_a_one_line_error(tmp_path: Path) -> None:
    joint = {**GOOD, "vlm": "org/joint", "base": None, "relation": "joint", "note": "n"}
    path = _write(tmp_path, [GOOD, joint])
    assert base_from_pairs("org/vlm-7b", path).base == "org/lm-7b"
    with pytest.raises(UsageError, match=r"not in .*pass --base"):
        base_from_pairs("org/unknown", path)
    with pytest.raises(UsageError, match="trained jointly with vision"):
        base_from_pairs("org/joint", path)


def test_compare_tokenizers_counts_prompts_split_differently() -> None:
    prompts = ["The capital of Veloria is Brask. Answer: A", "Question: Which is right? Yes",
               "答案：B"]
    plain, shifted = build_tokenizer(), build_tokenizer(extra_special=["<image>"])
    same = compare_tokenizers(plain, build_tokenizer(), prompts)
    assert (same.prompts, same.mismatched, same.first, same.rate) == (3, 0, None, 0.0)
    differ = compare_tokenizers(plain, shifted, prompts)  # <image> takes an id: merges move up
    assert differ.mismatched == 3 and differ.rate == 1.0 and differ.first == prompts[0]


def _save_llama_with_llava_tokenizer(path: Path) -> Path:
    """A tiny random Llama whose tokenizer is the tiny LLaVA's (``<image>`` included)."""
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(extra_special=["<image>"])
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", "--tasks", "mmlu", "--data-dir", str(ASSETS / "data" / "mmlu"),
                 "--limit", "1", "--num-fewshot", "0", "--output-path", str(tmp_path / "runs"),
                 "--run-id", "r", "--threads", "1", *extra])


@pytest.mark.usefixtures("keep_torch_threads")
def test_run_vlm_takes_its_base_from_the_pairs_file(tmp_path: Path, tiny_llava_dir: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    same_tokenizer_base = _save_llama_with_llava_tokenizer(tmp_path / "base")
    pairs = _write(tmp_path, [{**GOOD, "vlm": str(tiny_llava_dir), "base": str(same_tokenizer_base),
                               "verified": False}])
    assert _run(tmp_path, "--vlm", str(tiny_llava_dir), "--pairs", str(pairs)) == 0
    data = json.loads((tmp_path / "runs" / "r" / "results.json").read_text(encoding="utf-8"))
    pairing = data["config"]["pairing"]
    assert pairing["base_from"] == "vlm_pairs"
    assert pairing["entry"]["base"] == str(same_tokenizer_base)
    assert pairing["tokenizers"]["mismatched"] == 0 and pairing["tokenizers"]["prompts"] > 0
    assert list(data["models"]) == ["base", "vlm"] and data["models"]["base"]["kind"] == "hf"
    assert "UNVERIFIED" in caplog.text and str(same_tokenizer_base) in caplog.text


@pytest.mark.usefixtures("keep_torch_threads")
def test_run_vlm_refuses_a_tokenizer_mismatch(tmp_path: Path, tiny_llava_dir: Path,
                                              tiny_llama_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pairs = _write(tmp_path, [{**GOOD, "vlm": str(tiny_llava_dir), "base": str(tiny_llama_dir)}])
    assert _run(tmp_path, "--vlm", str(tiny_llava_dir), "--pairs", str(pairs)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "split" in err and "--allow-tokenizer-mismatch" in err
    assert not (tmp_path / "runs" / "r" / "results.json").exists()
    allowed = ("--vlm", str(tiny_llava_dir), "--pairs", str(pairs), "--allow-tokenizer-mismatch")
    assert _run(tmp_path, *allowed) == 0
    data = json.loads((tmp_path / "runs" / "r" / "results.json").read_text(encoding="utf-8"))
    check = data["config"]["pairing"]["tokenizers"]
    assert check["mismatched"] > 0 and check["rate"] == check["mismatched"] / check["prompts"]


@pytest.mark.usefixtures("keep_torch_threads")
def test_run_vlm_with_base_given_warns_when_the_pairs_file_disagrees(
        tmp_path: Path, tiny_llava_dir: Path, tiny_llama_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    pairs = _write(tmp_path, [{**GOOD, "vlm": str(tiny_llava_dir), "base": "org/another-lm"}])
    argv = ("--vlm", str(tiny_llava_dir), "--base", str(tiny_llama_dir), "--pairs", str(pairs),
            "--allow-tokenizer-mismatch")
    assert _run(tmp_path, *argv) == 0
    data = json.loads((tmp_path / "runs" / "r" / "results.json").read_text(encoding="utf-8"))
    assert data["config"]["pairing"]["base_from"] == "--base"
    assert "lists org/another-lm as the base of" in caplog.text


@pytest.mark.usefixtures("keep_torch_threads")
def test_run_vlm_unknown_without_base(tmp_path: Path, tiny_llava_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--vlm", str(tiny_llava_dir)) == 2
    err = capsys.readouterr().err
    assert f"not in {DEFAULT_PAIRS}" in err and "pass --base" in err


@pytest.mark.usefixtures("keep_torch_threads")
def test_sampled_prompts_are_the_strings_a_run_scores(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from iaa_eval.tasks import TaskOptions
    from iaa_eval.tasks.text import sample_prompts

    assert _run(tmp_path, "--base", str(tiny_llama_dir), "--log-samples") == 0
    samples = tmp_path / "runs" / "r" / "samples" / "base" / "mmlu.jsonl"
    lines = samples.read_text(encoding="utf-8")
    scored = [json.loads(line) for line in lines.splitlines()]
    options = TaskOptions(data_dir=ASSETS / "data" / "mmlu", num_fewshot=0)
    prompts = sample_prompts("mmlu", options, per_subject=1)
    assert len(prompts) == 4 * len(scored)  # every option of every question
    assert {f"{r['prompt']} {r['target']}" for r in scored} <= set(prompts)
