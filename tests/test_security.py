"""Issue 8 security: forbidden patterns cannot creep back into the package; --trust-remote-code
reaches every loader (off by default, warned when on); model outputs are escaped on every page."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

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
    "Markup(": re.compile(r"\bMarkup\("),
    "yaml unsafe/full load": re.compile(r"yaml\.(unsafe_load|full_load|load_all)\("),
    "unsafe yaml Loader": re.compile(r"Loader\s*=\s*yaml\.(Unsafe|Full)?Loader\b"),
    "weights_only=False": re.compile(r"weights_only\s*=\s*False"),
    "os.system / os.popen": re.compile(r"\bos\.(system|popen)\("),
    "marshal/dill/cloudpickle/shelve": re.compile(r"^\s*(import|from) (marshal|dill|cloudpickle|shelve)\b", re.M),
    "PIL bomb limit off": re.compile(r"MAX_IMAGE_PIXELS\s*=\s*None"),
}
# what each pattern must catch (so a typo in a regex cannot silently disable a check)
CAUGHT = {
    "shell=True": "subprocess.run(cmd, shell = True)",
    "trust_remote_code=True literal": "AutoModel.from_pretrained(p, trust_remote_code=True)",
    "unsafe yaml.load": "yaml.load(text)",
    "pickle": "import pickle",
    "eval/exec": "exec(code)",
    "autoescape off": "Environment(autoescape=False)",
    "|safe filter": "{{ response | safe }}",
    "Markup(": "Markup(response)",
    "yaml unsafe/full load": "yaml.unsafe_load(text)",
    "unsafe yaml Loader": "yaml.load(text, Loader=yaml.Loader)",
    "weights_only=False": "torch.load(f, weights_only=False)",
    "os.system / os.popen": "os.system('rm -rf x')",
    "marshal/dill/cloudpickle/shelve": "import dill",
    "PIL bomb limit off": "Image.MAX_IMAGE_PIXELS = None",
}


def test_every_pattern_catches_its_example() -> None:
    assert set(CAUGHT) == set(FORBIDDEN)
    for name, example in CAUGHT.items():
        assert FORBIDDEN[name].search(example), name
    assert not FORBIDDEN["unsafe yaml.load"].search("yaml.safe_load(text)")


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


def test_torch_load_check_sees_an_unsafe_call() -> None:
    assert "weights_only=True" not in re.search(r"torch\.load\(([^)]*)\)", "torch.load(f, map_location='cpu')").group(1)


def _spy(monkeypatch: pytest.MonkeyPatch, seen: list[tuple[str, Any]]) -> None:
    """Record ``trust_remote_code`` as each Hugging Face loader of the adapters receives it."""
    import transformers

    for name in ("AutoConfig", "AutoTokenizer", "AutoProcessor", "AutoModelForCausalLM",
                 "AutoModelForImageTextToText"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained.__func__

        def spy(klass: type, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen.append((_name, kwargs.get("trust_remote_code", "absent")))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))


@pytest.mark.parametrize("flag", [False, True])
def test_trust_remote_code_flag_reaches_every_loader_and_is_warned(
    flag: bool, tmp_path: Path, tiny_llama_dir: Path, tiny_llava_dir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from iaa_eval.cli import main
    from tests.tasks.conftest import write_mme

    seen: list[tuple[str, Any]] = []
    _spy(monkeypatch, seen)
    argv = ["run", "--model", f"base=hf:{tiny_llama_dir}", "--model", f"llava=llava:{tiny_llava_dir}", "--tasks", "mme",
            "--data-dir", str(write_mme(tmp_path / "mme")), "--limit", "1", "--output-path", str(tmp_path / "runs")]
    with caplog.at_level(logging.WARNING, logger="iaa_eval"):
        assert main(argv + (["--trust-remote-code"] if flag else [])) == 0
    assert {name for name, _ in seen} >= {"AutoTokenizer", "AutoProcessor", "AutoModelForCausalLM",
                                          "AutoModelForImageTextToText"}
    assert all(value is flag for _, value in seen), seen
    warned = [r.getMessage() for r in caplog.records if "--trust-remote-code" in r.getMessage()]
    if flag:  # every model folder whose code may run is named in a warning
        assert all(any(str(folder) in w for w in warned) for folder in (tiny_llama_dir, tiny_llava_dir))
    else:
        assert not warned
    if flag:
        assert f"code shipped with {tiny_llava_dir} will run on this machine" in warned[-1]


def test_comparison_page_escapes_run_and_model_text(tmp_path: Path) -> None:
    """The report page's escaping is tested in tests/report; the comparison page shows run ids, model
    and task names, which come from the user's files: a payload in them must come out as text."""
    import json

    from iaa_eval.report import render_comparison
    from tests.runfixture import XSS_IMG, make_run

    payload_id = XSS_IMG.replace("/", "")  # a run directory name cannot hold "/"
    run_a = make_run(tmp_path / "a", seed=1, n_text=6, n_mm=12)
    run_b = make_run(tmp_path / payload_id, seed=2, n_text=6, n_mm=12)
    data = json.loads((run_b / "results.json").read_text())
    data["run_id"] = payload_id
    (run_b / "results.json").write_text(json.dumps(data))
    page = render_comparison(run_a, run_b, tmp_path / "cmp", resamples=200)
    html = page.read_text(encoding="utf-8")
    assert payload_id not in html and "<img src=x" not in html and "<script" not in html.lower()
    assert "&lt;img src=x onerror=" in html


@pytest.mark.parametrize("case", ["run-id", "absolute-run-id", "model-name", "results-run-id"])
def test_names_never_become_paths_outside_their_folder(case: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A run id, a model name or a results.json's run_id that would leave --output-path or --out is
    refused with one line (exit 2), and nothing is written outside those folders."""
    import json

    from iaa_eval.cli import main
    from tests.runfixture import make_run

    inside = tmp_path / "work"
    runs = ["--tasks", "mmlu", "--output-path", str(inside / "runs")]
    run = ["run", "--model", f"base=hf:{tmp_path}", *runs]
    if case == "results-run-id":
        run_dir = make_run(inside / "runs" / "r", n_text=4, n_mm=12)
        data = json.loads((run_dir / "results.json").read_text())
        (run_dir / "results.json").write_text(json.dumps({**data, "run_id": "../../hijacked"}))
    before = set(tmp_path.rglob("*"))
    argv = {
        "run-id": [*run, "--run-id", "../escaped"],
        "absolute-run-id": [*run, "--run-id", str(tmp_path / "elsewhere")],
        "model-name": ["run", "--model", f"../../x=hf:{tmp_path}", *runs, "--run-id", "r"],
        "results-run-id": ["report", str(inside / "runs" / "r"), "--out", str(inside / "reports")],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a path separator" in err
    assert set(tmp_path.rglob("*")) - before == set()
