"""The README's mini-world numbers are the reference file's (``baselines/miniworld.json``), as the
README says: every cell of its table and every number of the bullets below it is derived here
from the reference and must appear as written, so a new reference cannot leave stale prose."""

from __future__ import annotations

from pathlib import Path

from iaa_eval.miniworld.reference import load_reference

README = Path(__file__).resolve().parents[2] / "README.md"
ROWS = {"base": "base (text LM; multimodal tasks blind)", "llava": "LLaVA-style (LLM fine-tuned)",
        "iaa": "IAA (LLM frozen)"}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def _p(value: float) -> str:
    if value >= 0.01:
        return f"{value:.2f}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e−{abs(int(exponent))}"


def _text_cell(row: dict, mcnemar: str) -> str:
    changed = row["right_to_wrong"] + row["wrong_to_right"]
    if row["delta"] == 0 and changed == 0:
        return f"{_pct(row['score'])} (0 items changed)"
    return (f"{_pct(row['score'])} (Δ {_signed(row['delta'])} [{_signed(row['ci_low'])}, "
            f"{_signed(row['ci_high'])}], {mcnemar}p = {_p(row['mcnemar_p'])})")


def _expected_rows(ref: dict) -> dict[str, list[str]]:
    forgetting = {(r["model"], r["task"]): r for r in ref["text_forgetting"]}
    rows = {}
    for model, scores in ref["scores"].items():
        text = [_pct(scores[t]["acc"]) if (model, t) not in forgetting
                else _text_cell(forgetting[model, t], "McNemar " if t == "mmlu" else "")
                for t in ("mmlu", "ceval")]
        mmb = scores["mmbench_en"]
        rows[model] = [*text, f"{scores['mme']['perception']:.1f}",
                       f"{_pct(mmb['circular_acc'])} / {_pct(mmb['vanilla_acc'])}",
                       _pct(scores["vqav2"]["accuracy"])]
    return rows


def _readme_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        for model, label in ROWS.items():
            if cells[0] == label:
                rows[model] = cells[1:]
    return rows


def test_the_readme_table_is_the_reference() -> None:
    assert _readme_rows(README.read_text(encoding="utf-8")) == _expected_rows(load_reference())


def test_the_readme_prose_is_the_reference() -> None:
    ref, words = load_reference(), " ".join(README.read_text(encoding="utf-8").split())
    mmlu = next(r for r in ref["text_forgetting"] if (r["model"], r["task"]) == ("llava", "mmlu"))
    ceval = next(r for r in ref["text_forgetting"] if (r["model"], r["task"]) == ("llava", "ceval"))
    llava, iaa = ref["scores"]["llava"], ref["scores"]["iaa"]
    circular = {m: _pct(s["mmbench_en"]["circular_acc"]) for m, s in ref["scores"].items()}
    single = {m: _pct(s["mmbench_en"]["vanilla_acc"]) for m, s in ref["scores"].items()}
    claims = [
        f"cost the language model {-100 * mmlu['delta']:.1f} points of mini-MMLU "
        f"({mmlu['right_to_wrong']} items right→wrong, {mmlu['wrong_to_right']} wrong→right; "
        f"p = {_p(mmlu['mcnemar_p'])})",
        f"On mini-C-Eval the fall ({-100 * ceval['delta']:.1f} points)",
        f"MME {iaa['mme']['perception']:.0f} vs {llava['mme']['perception']:.0f}",
        f"VQAv2 {_pct(iaa['vqav2']['accuracy'])} vs {_pct(llava['vqav2']['accuracy'])}",
        f"MMBench circular {circular['iaa']} vs {circular['llava']} "
        f"(single pass {single['iaa']} vs {single['llava']})",
        f"(IAA unchanged: {iaa['mme']['perception']:.0f} / {circular['iaa']} / "
        f"{_pct(iaa['vqav2']['accuracy'])})",
    ]
    missing = [claim for claim in claims if claim not in words]
    assert not missing, f"README.md does not state the reference as: {missing}"
