"""The bad-input catalogue: one row per broken input, what the CLI says about it, and its exit code.

Each case builds its broken input under a fresh folder ``d`` and returns the ``iaa-eval``
arguments. ``message`` is what stderr (or, for ``gate``, stdout) must contain, with ``{d}`` for
that folder. ``skipped``: with ``--on-error skip`` the run succeeds and results.json records this
many skips. ``samples``: an input that is valid after all (exit 0); the run's samples file at this
path (under the run folder) must contain ``message``, showing how the input was read. ``docs/bad_inputs.md`` is generated from this table (``python -m
tests.bad_inputs.cases > docs/bad_inputs.md``) and a test checks it has not drifted.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import signal
import sqlite3
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

SAFE = "--on-error"


@dataclass(frozen=True)
class Models:
    """The tiny models every case may use (read-only: cases that break a model copy it)."""

    llama: Path
    llava: Path


@dataclass(frozen=True)
class Case:
    """One catalogue row."""

    id: str
    what: str
    build: Callable[[Path, Models], list[str]]
    exit_code: int
    message: str
    skipped: int | None = None  # --on-error skip: the recorded skip count
    needs_non_root: bool = False
    samples: str | None = None  # a valid input: this samples file (in the run folder) holds message
    during: Callable[[Path], AbstractContextManager[object]] | None = None  # the world meanwhile
    keeps: str | None = None  # finished work kept: {d}/runs/r/results.json still holds this task
    env: dict[str, str] | None = None  # environment variables set for the run (as torchrun's)


# ---------------------------------------------------------------- helpers
def run(model: str, tasks: str, data: Path | None, d: Path, *extra: str) -> list[str]:
    """``iaa-eval run`` with a tiny model on ``tasks``, writing under ``d/runs``."""
    argv = ["run", "--model", model, "--tasks", tasks, "--output-path", str(d / "runs"), "--run-id", "r",
            "--threads", "1", "--limit", "2", *extra]
    return argv + (["--data-dir", str(data)] if data is not None else [])


def llama(m: Models) -> str:
    return f"base=hf:{m.llama}"


def llava(m: Models) -> str:
    return f"llava=llava:{m.llava}"


def copy_model(src: Path, d: Path) -> Path:
    """A private copy of a tiny model to break."""
    return Path(shutil.copytree(src, d / "model"))


def mmlu(d: Path, dev: int = 5) -> Path:
    """One subject, 3 test questions; the test CSV is ``{d}/mmlu/test/s_test.csv``."""
    from tests.tasks.text_helpers import write_mmlu

    return write_mmlu(d / "mmlu", {"s": 3}, dev=dev)


def set_row(path: Path, line: int, row: list[str] | None = None, raw: bytes | None = None) -> None:
    """Replace CSV line ``line`` (1-based) with ``row`` (or raw bytes)."""
    lines = path.read_bytes().splitlines(keepends=True)
    if raw is None:
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(row or [])
        raw = path.read_bytes()
    lines[line - 1] = raw
    path.write_bytes(b"".join(lines))


def mmlu_row(d: Path, row: list[str] | None = None, raw: bytes | None = None) -> Path:
    data = mmlu(d)
    set_row(data / "test" / "s_test.csv", 2, row, raw)
    return data


def mme(d: Path) -> Path:
    from tests.tasks.conftest import write_mme

    return write_mme(d / "mme")


def mmbench(d: Path, change: Callable[[list[dict[str, str]]], None]) -> Path:
    """The MMBench fixture TSV with ``change`` applied to its rows (dicts; delete a key to drop a column)."""
    from tests.tasks.conftest import write_mmbench

    path = write_mmbench(d / "mmb" / "mmbench_en.tsv", "en")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    change(rows)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path.parent


def vqa(d: Path, change: Callable[[dict, dict], None] | None = None) -> Path:
    """The VQAv2 fixture pair with ``change(questions, annotations)`` applied."""
    from tests.tasks.conftest import write_vqav2

    root = write_vqav2(d / "vqa", n=2)
    qpath, apath = root / "v2_OpenEnded_mscoco_val2014_questions.json", root / "v2_mscoco_val2014_annotations.json"
    questions, annotations = json.loads(qpath.read_text()), json.loads(apath.read_text())
    if change is not None:
        change(questions, annotations)
    qpath.write_text(json.dumps(questions))
    apath.write_text(json.dumps(annotations))
    return root


def vqa_field(part: str, index: int, key: str, value: object) -> Callable[[dict, dict], None]:
    """A VQA change setting field ``key`` of question (``part`` "q") or annotation ("a") ``index``;
    ``value`` None deletes it."""
    def change(q: dict, a: dict) -> None:
        record = (q["questions"] if part == "q" else a["annotations"])[index]
        record.pop(key) if value is None else record.__setitem__(key, value)

    return change


def _vqa_bare_list(m: Models, d: Path) -> list[str]:
    data = vqa(d)
    path = data / "v2_mscoco_val2014_annotations.json"
    path.write_text(json.dumps(json.loads(path.read_text())["annotations"]))
    return run(llama(m), "vqav2", data, d)


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A PNG whose header claims ``side`` x ``side`` pixels (10^10, far over PIL's limit) in a few bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def vqa_image(d: Path, image: str) -> Path:
    """VQA data whose first question names ``image`` (relative to the data folder)."""
    def change(q: dict, _: dict) -> None:
        q["questions"][0]["image"] = image

    return vqa(d, change)


def nan_weights(src: Path, d: Path) -> Path:
    """A copy of a tiny model whose every weight is NaN."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = copy_model(src, d)
    weights = load_file(folder / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return folder


def inf_head(src: Path, d: Path) -> Path:
    """A copy of a tiny model whose head overflows: the final norm keeps one feature, scaled by
    1e10, and the head reads it with weight 3e38, so every logit is +inf or -inf (never NaN)."""
    from safetensors.torch import load_file, save_file

    folder = copy_model(src, d)
    weights = load_file(folder / "model.safetensors")
    for name, value in weights.items():
        if name.endswith("lm_head.weight"):
            value[:, 1:], value[:, 0] = 0.0, 3e38
        elif name.endswith("model.norm.weight") and "layers" not in name:
            value[1:], value[0] = 0.0, 1e10
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def suite(d: Path, text: str) -> Path:
    path = d / "mysuite.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def gate_file(d: Path, text: str) -> list[str]:
    from tests.runfixture import make_run

    run_dir = make_run(d / "runs" / "r", n_text=4, n_mm=12)
    (d / "gate.yaml").write_text(text, encoding="utf-8")
    return ["gate", str(run_dir), "--thresholds", str(d / "gate.yaml")]


def _truncate(m: Models, d: Path) -> list[str]:
    folder = copy_model(m.llama, d)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return run(f"base=hf:{folder}", "mmlu", mmlu(d), d)


def _garbage(m: Models, d: Path) -> list[str]:
    folder = copy_model(m.llama, d)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    return run(f"base=hf:{folder}", "mmlu", mmlu(d), d)


def _sizes(m: Models, d: Path) -> list[str]:
    folder = copy_model(m.llama, d)
    edit_json(folder / "config.json", intermediate_size=48)
    return run(f"base=hf:{folder}", "mmlu", mmlu(d), d)


def _missing_weight(m: Models, d: Path) -> list[str]:
    from safetensors.torch import load_file, save_file

    folder = copy_model(m.llama, d)
    weights = load_file(folder / "model.safetensors")
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return run(f"base=hf:{folder}", "mmlu", mmlu(d), d)


def _tokenizer(m: Models, d: Path) -> list[str]:
    from transformers import AutoTokenizer

    folder = copy_model(m.llama, d)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([f"extra_token_{i}" for i in range(500)])
    tokenizer.save_pretrained(folder)
    return run(f"base=hf:{folder}", "mmlu", mmlu(d), d)


def _output_file(m: Models, d: Path) -> list[str]:
    (d / "runs").write_text("a file, not a folder")
    return run(llama(m), "mmlu", mmlu(d), d)


def _read_only(m: Models, d: Path) -> list[str]:
    (d / "runs").mkdir()
    (d / "runs").chmod(0o555)
    return run(llama(m), "mmlu", mmlu(d), d)


def _ceval_header(m: Models, d: Path) -> list[str]:
    from tests.tasks.text_helpers import write_ceval

    data = write_ceval(d / "ceval", {"law": 2})
    path = data / "val" / "law_val.csv"
    path.write_text(path.read_text(encoding="utf-8").replace(",answer", ",solution", 1), encoding="utf-8")
    return run(llama(m), "ceval", data, d)


def _mmlu_missing_dev(m: Models, d: Path) -> list[str]:
    data = mmlu(d)
    (data / "dev" / "s_dev.csv").unlink()
    return run(llama(m), "mmlu", data, d)


def _mmlu_empty(m: Models, d: Path) -> list[str]:
    data = mmlu(d)
    for path in (data / "test").iterdir():
        path.unlink()
    return run(llama(m), "mmlu", data, d)


def _mmlu_empty_file(m: Models, d: Path) -> list[str]:
    data = mmlu(d)
    (data / "test" / "s_test.csv").write_text("")
    return run(llama(m), "mmlu", data, d)


def _mme_no_answer(m: Models, d: Path) -> list[str]:
    data = mme(d)
    path = data / "existence" / "1000.txt"
    path.write_text("Is there a circle in this image? Please answer yes or no.\n", encoding="utf-8")
    return run(llama(m), "mme", data, d)


def _mme_bad_answer(m: Models, d: Path) -> list[str]:
    data = mme(d)
    path = data / "existence" / "1000.txt"
    path.write_text("Is there a circle in this image? Please answer yes or no.\tMaybe\n", encoding="utf-8")
    return run(llama(m), "mme", data, d)


def _mme_missing_image(m: Models, d: Path, *extra: str) -> list[str]:
    data = mme(d)
    (data / "existence" / "1000.jpg").unlink()
    return run(llama(m), "mme", data, d, *extra)


def _mme_empty(m: Models, d: Path) -> list[str]:
    (d / "mme" / "existence").mkdir(parents=True)
    return run(llama(m), "mme", d / "mme", d)


def _not_b64(rows: list[dict[str, str]]) -> None:
    rows[1]["image"] = "not*base64!"


def _no_option_b(rows: list[dict[str, str]]) -> None:
    for row in rows:
        del row["B"]


def _answer_e(rows: list[dict[str, str]]) -> None:
    rows[0]["answer"] = "E"


def _option_none(rows: list[dict[str, str]]) -> None:
    rows[0]["A"] = "None"


def _copy_not_rotated(rows: list[dict[str, str]]) -> None:
    """Question 1 (red/blue, answer A) gets a copy at 1000001 that repeats it unrotated."""
    rows.append({**rows[1], "index": "1000001", "image": "1"})


def _mme_lines(m: Models, d: Path, text: bytes, *extra: str) -> list[str]:
    """MME with ``existence/1000.txt`` replaced by ``text``; run with --log-samples."""
    data = mme(d)
    (data / "existence" / "1000.txt").write_bytes(text)
    return run(llama(m), "mme", data, d, "--log-samples", *extra)


MME_PAIR = "Is there a circle in this image? Please answer yes or no.\tYes\nIs there a dog in this image? " \
    "Please answer yes or no.\tNo\n"


def _qid_mismatch(q: dict, a: dict) -> None:
    a["annotations"][1]["question_id"] = 999


def _no_questions(q: dict, a: dict) -> None:
    q["questions"] = []


def _vqa_not_json(m: Models, d: Path) -> list[str]:
    data = vqa(d)
    (data / "v2_mscoco_val2014_annotations.json").write_text('{"annotations": [', encoding="utf-8")
    return run(llama(m), "vqav2", data, d)


def _vqa_bomb(m: Models, d: Path, *extra: str) -> list[str]:
    data = vqa_image(d, "bomb.png")
    bomb_png(data / "bomb.png")
    return run(llava(m), "vqav2", data, d, *extra)


def _vqa_truncated_image(m: Models, d: Path) -> list[str]:
    data = vqa_image(d, "half.jpg")
    whole = next((data / "val2014").iterdir()).read_bytes()
    (data / "half.jpg").write_bytes(whole[: len(whole) // 3])
    return run(llava(m), "vqav2", data, d)


def _gate_task(m: Models, d: Path) -> list[str]:
    return gate_file(d, "version: 1\nmultimodal:\n  - {kind: iaa, task: mmmu, min: 0.5}\n")


def _gate_key(m: Models, d: Path) -> list[str]:
    return gate_file(d, "version: 1\nthresholds: {}\n")


def train(m: Models, d: Path, records: object, *extra: str) -> list[str]:
    """``iaa-eval train iaa`` on ``{d}/llava.json`` holding ``records`` (text as is, else as JSON) and
    one image, ``{d}/images/a.png``. Data errors stop it before any model is loaded."""
    from tests.iaa_helpers import random_image

    (d / "images").mkdir(parents=True, exist_ok=True)
    random_image(0).save(d / "images" / "a.png")
    (d / "llava.json").write_text(records if isinstance(records, str) else json.dumps(records), encoding="utf-8")
    return ["train", "iaa", "--base", str(m.llama), "--vision", str(vision_tower(m, d)),
            "--data", str(d / "llava.json"), "--out", str(d / "ckpt"), "--steps", "1", "--threads", "1",
            *extra]


def vision_tower(m: Models, d: Path) -> Path:
    """A CLIP vision tower folder (weights and image processor) in ``{d}/clip``: the tiny LLaVA's
    own folder is no CLIP checkpoint, and the loaders refuse to run its tower on random weights."""
    from transformers import CLIPImageProcessor, CLIPVisionModel

    from tests.conftest import tiny_clip_config

    folder = d / "clip"
    CLIPVisionModel(tiny_clip_config()).save_pretrained(folder)
    CLIPImageProcessor.from_pretrained(m.llava).save_pretrained(folder)
    return folder


def turns(*roles: str) -> list[dict[str, str]]:
    return [{"from": role, "value": "<image>\nWhat colour?" if role == "human" else "red"} for role in roles]


# ---------------------------------------------------------------- names, run state, the world
def made_run(d: Path, change: Callable[[dict], None] | None = None, name: str = "r") -> Path:
    """A finished run folder ``{d}/runs/<name>`` (tests/runfixture.py) with ``change`` applied to
    its results.json."""
    from tests.runfixture import make_run

    run_dir = make_run(d / "runs" / name, n_text=4, n_mm=12)
    if change is not None:
        path = run_dir / "results.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return run_dir


def report(d: Path, change: Callable[[dict], None]) -> list[str]:
    return ["report", str(made_run(d, change)), "--out", str(d / "reports")]


def _renamed_tasks(data: dict) -> None:
    data["results"] = {m: {f"{t}_old": e for t, e in tasks.items()}
                       for m, tasks in data["results"].items()}


def _metric_string(data: dict) -> None:
    data["results"]["base"]["mmlu"]["metrics"]["acc"] = "0.5"


def _gate_against_disjoint(m: Models, d: Path) -> list[str]:
    earlier = made_run(d, _renamed_tasks, name="old")
    return [*gate_file(d, "version: 1\nregression: {tolerance: 0.0}\n"), "--against", str(earlier)]


def _gate_against_no_section(m: Models, d: Path) -> list[str]:
    earlier = made_run(d, name="old")
    return [*gate_file(d, "version: 1\ntext:\n  iaa: {max_flips: 0}\n"), "--against", str(earlier)]


def _rerun_other_tasks(m: Models, d: Path) -> list[str]:
    made_run(d)  # base, llava and iaa on mmlu, ceval, mme, mmbench_en and vqav2
    return run(llama(m), "mmlu", mmlu(d), d)


def _no_pad_no_eos(m: Models, d: Path) -> list[str]:
    folder = copy_model(m.llama, d)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.pop("eos_token")
    config.pop("pad_token")
    path.write_text(json.dumps(config))
    return run(f"base=hf:{folder}", "mme", mme(d), d)


def _iaa_positions(m: Models, d: Path) -> list[str]:
    """An IAA checkpoint (3 base layers) whose config.json puts an insertion layer after layer 7."""
    from tests.iaa_helpers import tiny_iaa

    tokenizer, _, _, processor, model = tiny_iaa(layers=3)
    model.save_pretrained(d / "ckpt", tokenizer=tokenizer, image_processor=processor)
    edit_json(d / "ckpt" / "config.json", insert_after_layers=[0, 7])
    return run(f"iaa=iaa:{d}/ckpt", "mme", mme(d), d)


def _foreign_cache(m: Models, d: Path) -> list[str]:
    (d / "runs" / "r").mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(d / "runs" / "r" / "cache.sqlite")) as db:
        db.execute("CREATE TABLE requests (id INTEGER, blob BLOB)")
        db.commit()
    return run(llama(m), "mmlu", mmlu(d), d)


def _two_tasks(m: Models, d: Path) -> list[str]:
    """mmlu then mme (blind) with the tiny Llama: a run that writes results.json twice."""
    return run(llama(m), "mmlu,mme", None, d,
               "--data-dir", f"mmlu={mmlu(d)}", "--data-dir", f"mme={mme(d)}")


@contextlib.contextmanager
def _after_first_results(act: Callable[[Path, int], None]) -> Iterator[None]:
    """Call ``act(path, call)`` around each results.json write of the run loop (call 1, 2, ...)."""
    from iaa_eval import evaluate

    original, calls = evaluate.write_results, []

    def write(run_dir: Path, data: dict) -> Path:
        calls.append(run_dir)
        act(run_dir / "results.json", len(calls))
        path = original(run_dir, data)
        act(path, -len(calls))
        return path

    evaluate.write_results = write
    try:
        yield
    finally:
        evaluate.write_results = original


def _sigterm(d: Path) -> AbstractContextManager[object]:
    """SIGTERM arrives once the first task's results are written."""
    def act(_: Path, call: int) -> None:
        if call == -1:
            os.kill(os.getpid(), signal.SIGTERM)

    return _after_first_results(act)


def _disk_full(d: Path) -> AbstractContextManager[object]:
    """The disk fills up between the first and the second results.json."""
    def act(path: Path, call: int) -> None:
        if call == 2:
            real_replace = os.replace

            def full(src: str, dst: str) -> None:
                os.replace = real_replace
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

            os.replace = full

    return _after_first_results(act)


@contextlib.contextmanager
def _hub_unreachable(d: Path) -> Iterator[None]:
    """The hub's endpoint refuses connections (a closed local port), and no proxy is set."""
    from huggingface_hub import constants

    from iaa_eval.models import loading

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
    endpoint, constants.ENDPOINT = constants.ENDPOINT, "http://127.0.0.1:9"
    loading.hub_unreachable.cache_clear()
    try:
        yield
    finally:
        constants.ENDPOINT = endpoint
        os.environ.update(saved)
        loading.hub_unreachable.cache_clear()


class _ClosedPipe:
    """A stdout whose reader went away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")


@contextlib.contextmanager
def _broken_pipe(d: Path) -> Iterator[None]:
    stdout, sys.stdout = sys.stdout, _ClosedPipe()
    try:
        yield
    finally:
        sys.stdout = stdout


CASES: list[Case] = [
    # ---- models
    Case("safetensors-truncated", "model.safetensors cut to half its size", _truncate, 2, "model '{d}/model': weight file model.safetensors unreadable (Error while deserializing header: incomplete metadata, file not fully covered); expected a complete safetensors file"),
    Case("safetensors-garbage", "model.safetensors that is not safetensors at all", _garbage, 2, "model '{d}/model': weight file model.safetensors unreadable (Error while deserializing header: header too large); expected a complete safetensors file"),
    Case("config-size-mismatch", "config.json intermediate_size disagrees with the weights", _sizes, 2, "model '{d}/model': config.json does not match the weights: weight model.layers.0.mlp.down_proj.weight has shape [32, 64] in the checkpoint, config.json implies [32, 48]; fix the config's sizes"),
    Case("safetensors-missing-weight", "a weight deleted from model.safetensors (it would run random)", _missing_weight, 2, "model '{d}/model': the weights do not match LlamaForCausalLM: 1 weights missing from the checkpoint (they would be random): model.layers.1.mlp.down_proj.weight; expected a checkpoint saved by this architecture"),
    Case("vlm-not-a-vlm", "--vlm naming a text-only model", lambda m, d: run(f"vlm=vlm:{copy_model(m.llama, d)}", "mme", mme(d), d), 2, "vlm '{d}/model': model_type 'llama' is not a supported VLM family; supported: llava, llava_next, llava_onevision, qwen2_vl"),
    Case("tokenizer-mismatch", "a tokenizer with 500 more tokens than the embedding has rows", _tokenizer, 2, "{d}/model: tokenizer has 820 tokens but the model's embedding has only 320 rows; the tokenizer does not belong to this model"),
    Case("model-missing", "--model naming a directory that does not exist",
         lambda m, d: run(f"base=hf:{d}/nope", "mmlu", mmlu(d), d), 2, "--model 'base=hf:{d}/nope': no such directory '{d}/nope'"),
    Case("nan-logits-scoring", "a model whose weights are NaN, on a scored (text) task",
         lambda m, d: run(f"base=hf:{nan_weights(m.llama, d)}", "mmlu", mmlu(d), d), 2, "model 'base' (hf:{d}/model) on task 'mmlu': the model's logits are NaN"),
    Case("nan-logits-generation", "a model whose weights are NaN, on a generated (multimodal) task",
         lambda m, d: run(f"llava=llava:{nan_weights(m.llava, d)}", "mme", mme(d), d), 2, "model 'llava' (llava:{d}/model) on task 'mme': the model's logits are NaN"),
    Case("inf-logits-generation", "a model whose head gives infinite logits, on a generated task",
         lambda m, d: run(f"llava=llava:{inf_head(m.llava, d)}", "mme", mme(d), d), 2,
         "model 'llava' (llava:{d}/model) on task 'mme': the model's logits are infinite"),
    Case("inf-logits-scoring", "a model whose head gives infinite logits, on a scored (text) task",
         lambda m, d: run(f"base=hf:{inf_head(m.llama, d)}", "mmlu", mmlu(d), d), 2,
         "model 'base' (hf:{d}/model) on task 'mmlu': the model's logits are"),
    Case("bad-dtype", "--dtype that torch does not have",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--dtype", "float8"), 2, "--dtype 'float8': expected one of auto, float32, bfloat16, float16"),
    Case("device-map-unknown", "--device-map that is no placement strategy",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--device-map", "cuda:0"), 2,
         "--device-map 'cuda:0': expected one of auto, balanced, balanced_low_0, sequential"),
    Case("max-memory-size", "--max-memory with a size that is not one",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--device-map", "auto",
                          "--max-memory", "cpu=lots"), 2,
         "--max-memory 'cpu=lots': size 'lots' is not a size like 70GiB or 500MB"),
    Case("max-memory-no-such-gpu", "--max-memory naming a GPU this machine does not have",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--device-map", "auto",
                          "--max-memory", "99=8GiB"), 2,
         "--max-memory 99=...: no GPU 99 on this machine"),
    Case("max-memory-alone", "--max-memory without --device-map",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--max-memory", "cpu=8GiB"), 2,
         "--max-memory needs --device-map"),
    Case("device-map-data-parallel", "--device-map in one of 2 torchrun ranks (WORLD_SIZE=2)",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--device-map", "auto"), 2,
         "--device-map with 2 data-parallel processes (WORLD_SIZE=2): each would load the whole "
         "model across the same devices", env={"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}),
    # ---- text data
    Case("csv-column-count", "MMLU CSV row with 5 columns",
         lambda m, d: run(llama(m), "mmlu", mmlu_row(d, ["q", "a", "b", "c", "A"]), d), 2, "{d}/mmlu/test/s_test.csv:2: expected 6 columns (question,A,B,C,D,answer), found 5"),
    Case("csv-blank-answer", "MMLU CSV row with a blank answer",
         lambda m, d: run(llama(m), "mmlu", mmlu_row(d, ["q", "a", "b", "c", "d", " "]), d), 2, "{d}/mmlu/test/s_test.csv:2: answer '' is not one of A, B, C, D"),
    Case("csv-answer-not-a-d", "MMLU CSV row answering E",
         lambda m, d: run(llama(m), "mmlu", mmlu_row(d, ["q", "a", "b", "c", "d", "E"]), d), 2, "{d}/mmlu/test/s_test.csv:2: answer 'E' is not one of A, B, C, D"),
    Case("csv-not-utf8", "MMLU CSV row with Latin-1 bytes",
         lambda m, d: run(llama(m), "mmlu", mmlu_row(d, raw=b"caf\xe9,a,b,c,d,A\n"), d), 2, "{d}/mmlu/test/s_test.csv:2: not UTF-8 (invalid continuation byte at byte "),
    Case("csv-skip", "MMLU CSV row with 5 columns, --on-error skip",
         lambda m, d: run(llama(m), "mmlu", mmlu_row(d, ["q", "a", "b", "c", "A"]), d, SAFE, "skip"), 0, "{d}/mmlu/test/s_test.csv:2: expected 6 columns (question,A,B,C,D,answer), found 5",
         skipped=1),
    Case("csv-empty-file", "MMLU test CSV with no rows", _mmlu_empty_file, 2, "{d}/mmlu/test/s_test.csv: no usable rows"),
    Case("mmlu-no-subjects", "MMLU test/ folder without any *_test.csv (empty dataset)", _mmlu_empty, 2, "{d}/mmlu/test: no *_test.csv files; the task would be empty"),
    Case("fewshot-too-few", "a dev file with 2 rows for the default 5 shots",
         lambda m, d: run(llama(m), "mmlu", mmlu(d, dev=2), d), 2, "{d}/mmlu/dev/s_dev.csv: 2 usable rows, but 5 few-shot examples are needed; add rows or pass --num-fewshot 2"),
    Case("mmlu-missing-dev", "a subject without its dev (few-shot) file", _mmlu_missing_dev, 2, "{d}/mmlu/dev/s_dev.csv: missing (every subject needs dev and evaluation files)"),
    Case("ceval-header", "C-Eval CSV whose header lacks the answer column", _ceval_header, 2, "{d}/ceval/val/law_val.csv:1: header lacks column(s) answer"),
    # ---- multimodal data
    Case("mmbench-base64", "MMBench TSV row whose image is not base64",
         lambda m, d: run(llama(m), "mmbench_en", mmbench(d, _not_b64), d), 2, "{d}/mmb/mmbench_en.tsv row 2 (index 1): image field is not valid base64"),
    Case("mmbench-base64-skip", "MMBench TSV row whose image is not base64, --on-error skip",
         lambda m, d: run(llama(m), "mmbench_en", mmbench(d, _not_b64), d, SAFE, "skip"), 0, "{d}/mmb/mmbench_en.tsv row 2 (index 1): image field is not valid base64", skipped=1),
    Case("mmbench-option-column", "MMBench TSV without an option column (B)",
         lambda m, d: run(llama(m), "mmbench_en", mmbench(d, _no_option_b), d), 2, "{d}/mmb/mmbench_en.tsv: missing column 'B'"),
    Case("mmbench-answer", "MMBench TSV row whose answer is not among its options",
         lambda m, d: run(llama(m), "mmbench_en", mmbench(d, _answer_e), d), 2, "{d}/mmb/mmbench_en.tsv row 1 (index 0): row without an answer among its options (answer 'E')"),
    Case("mme-no-answer", "MME question file line without the answer column", _mme_no_answer, 2, "{d}/mme/existence/1000.txt:1: expected 'question<TAB>answer', got 1 fields"),
    Case("mme-answer", "MME question file line answering Maybe", _mme_bad_answer, 2, "{d}/mme/existence/1000.txt:1: row without a yes/no answer (got 'Maybe')"),
    Case("mme-missing-image", "MME question file whose image is missing", _mme_missing_image, 2, "{d}/mme/existence/1000.txt: no image 1000{.jpg,.png} in {d}/mme/existence"),
    Case("mme-missing-image-skip", "MME question file whose image is missing, --on-error skip",
         lambda m, d: _mme_missing_image(m, d, SAFE, "skip"), 0, "{d}/mme/existence/1000.txt: no image 1000{.jpg,.png} in {d}/mme/existence", skipped=1),
    Case("mme-empty", "MME folder with a subtask folder but no questions (empty dataset)", _mme_empty, 2, "{d}/mme: no mme items to evaluate (the dataset is empty); expected at least one question"),
    Case("mmbench-option-none", "MMBench option whose text is literally None (a real option; only an empty cell is absent)",
         lambda m, d: run(llama(m), "mmbench_en", mmbench(d, _option_none), d, "--log-samples"), 0,
         r"What shape is in the image?\nA. None\nB. rectangle\nC. triangle\nD. None of these options",
         samples="samples/base/mmbench_en.jsonl"),
    Case("mmbench-copy-not-rotated", "MMBench circular copy (index + 1e6) that does not rotate its original's options",
         lambda m, d: run(llama(m), "mmbench_en", mmbench(d, _copy_not_rotated), d), 2,
         "{d}/mmb/mmbench_en.tsv row 4 (index 1000001): not rotation 1 of index 1 (expected options ['blue', 'red'], answer B; got options ['red', 'blue'], answer A)"),
    Case("mmbench-copy-not-rotated-skip", "MMBench copy that does not rotate its original, --on-error skip (the question is left out whole)",
         lambda m, d: run(llama(m), "mmbench_en", mmbench(d, _copy_not_rotated), d, SAFE, "skip"), 0,
         "{d}/mmb/mmbench_en.tsv row 4 (index 1000001): not rotation 1 of index 1", skipped=2),
    Case("mme-bom", "MME question file starting with a UTF-8 byte-order mark (dropped)",
         lambda m, d: _mme_lines(m, d, b"\xef\xbb\xbf" + MME_PAIR.encode()), 0,
         '{"doc_id": "existence/1000.jpg#0", "prompt": "Is there a circle in this image? Please answer yes or no."',
         samples="samples/base/mme.jsonl"),
    Case("mme-not-utf8", "MME question file with Latin-1 bytes",
         lambda m, d: _mme_lines(m, d, "Is it a caf\u00e9?\tYes\n".encode("latin-1") + MME_PAIR.encode()), 2,
         "{d}/mme/existence/1000.txt:1: not UTF-8 (invalid continuation byte at byte 11); save the file as UTF-8"),
    Case("mme-single-question", "MME image asked one question instead of a pair (acc+ would count it as both right)",
         lambda m, d: _mme_lines(m, d, MME_PAIR.split("\n")[0].encode()), 2,
         "{d}/mme/existence/1000.txt: image '1000.jpg' has 1 question(s); MME asks two per image (acc+ scores the pair)"),
    Case("mme-single-question-skip", "MME image asked one question, --on-error skip",
         lambda m, d: _mme_lines(m, d, MME_PAIR.split("\n")[0].encode(), SAFE, "skip"), 0,
         "{d}/mme/existence/1000.txt: image '1000.jpg' has 1 question(s)", skipped=1),
    Case("vqa-ids", "VQAv2 annotations whose question ids do not match the questions file",
         lambda m, d: run(llama(m), "vqav2", vqa(d, _qid_mismatch), d), 2, "{d}/vqa/v2_OpenEnded_mscoco_val2014_questions.json question 1 (question_id 1012): row without answer (no annotation in v2_mscoco_val2014_annotations.json)"),
    Case("vqa-ids-skip", "VQAv2 question ids that do not match, --on-error skip",
         lambda m, d: run(llama(m), "vqav2", vqa(d, _qid_mismatch), d, SAFE, "skip"), 0, "{d}/vqa/v2_OpenEnded_mscoco_val2014_questions.json question 1 (question_id 1012): row without answer (no annotation in v2_mscoco_val2014_annotations.json)", skipped=1),
    Case("vqa-empty", "VQAv2 questions file with no questions (empty dataset)",
         lambda m, d: run(llama(m), "vqav2", vqa(d, _no_questions), d), 2, "{d}/vqa: no vqav2 items to evaluate (the dataset is empty); expected at least one question"),
    Case("vqa-not-json", "VQAv2 annotations file cut mid-way (not JSON)", _vqa_not_json, 2, "{d}/vqa/v2_mscoco_val2014_annotations.json: cannot read JSON (Expecting value: line 1 column 18 (char 17))"),
    Case("vqa-answers-string", "VQAv2 annotation whose answers are a string, not a list of answer records",
         lambda m, d: run(llama(m), "vqav2", vqa(d, vqa_field("a", 1, "answers", "gray")), d), 2,
         "{d}/vqa/v2_mscoco_val2014_annotations.json annotation 1 (question_id 1012): field 'answers' must be a non-empty list of {'answer': text} records, got str 'gray'"),
    Case("vqa-answers-string-skip", "VQAv2 answers that are a string, --on-error skip",
         lambda m, d: run(llama(m), "vqav2", vqa(d, vqa_field("a", 1, "answers", "gray")), d, SAFE, "skip"), 0,
         "{d}/vqa/v2_mscoco_val2014_annotations.json annotation 1 (question_id 1012): field 'answers' must be", skipped=1),
    Case("vqa-answers-empty", "VQAv2 annotation whose ten answers are all empty",
         lambda m, d: run(llama(m), "vqav2", vqa(d, vqa_field("a", 1, "answers", [{"answer": ""}] * 10)), d), 2,
         "{d}/vqa/v2_mscoco_val2014_annotations.json annotation 1 (question_id 1012): every one of the 10 answers is empty"),
    Case("vqa-no-question", "VQAv2 question record without its question text",
         lambda m, d: run(llama(m), "vqav2", vqa(d, vqa_field("q", 1, "question", None)), d), 2,
         "{d}/vqa/v2_OpenEnded_mscoco_val2014_questions.json question 1 (question_id 1012): field 'question' missing or not text (got NoneType None)"),
    Case("vqa-image-id", "VQAv2 question whose image_id is not an integer (a string)",
         lambda m, d: run(llama(m), "vqav2", vqa(d, vqa_field("q", 1, "image_id", "1")), d), 2,
         "{d}/vqa/v2_OpenEnded_mscoco_val2014_questions.json question 1 (question_id 1012): field 'image_id' must be an integer (it names the COCO image file), got str '1'"),
    Case("vqa-image-id-bool", "VQAv2 question whose image_id is true (a bool, not an integer)",
         lambda m, d: run(llama(m), "vqav2", vqa(d, vqa_field("q", 1, "image_id", True)), d), 2,
         "{d}/vqa/v2_OpenEnded_mscoco_val2014_questions.json question 1 (question_id 1012): field 'image_id' must be an integer (it names the COCO image file), got bool True"),
    Case("vqa-annotations-list", "VQAv2 annotations file that is a bare list, not the official object", _vqa_bare_list, 2,
         "{d}/vqa/v2_mscoco_val2014_annotations.json: expected a JSON object with the 'annotations' list (the official VQA layout), got a JSON list"),
    Case("image-escapes", "an image path leaving the data folder (../../)",
         lambda m, d: run(llama(m), "vqav2", vqa_image(d, "../../etc/passwd"), d), 2, "{d}/vqa/v2_OpenEnded_mscoco_val2014_questions.json question 0 (question_id 0): image path '../../etc/passwd' leaves the data folder {d}/vqa"),
    Case("image-bomb", "a PNG claiming 100000 x 100000 pixels (decompression bomb)", _vqa_bomb, 2, "{d}/vqa/bomb.png: image refused as a decompression bomb (Image size (10000000000 pixels) exceeds limit of 178956970 pixels"),
    Case("image-bomb-skip", "the decompression bomb, --on-error skip",
         lambda m, d: _vqa_bomb(m, d, SAFE, "skip"), 0, "{d}/vqa/bomb.png: image refused as a decompression bomb", skipped=1),
    Case("image-truncated", "a JPEG cut to a third of its bytes", _vqa_truncated_image, 2, "{d}/vqa/half.jpg: cannot decode the image (Truncated File Read)"),
    # ---- configuration and flags
    Case("suite-unknown-key", "suite YAML with a misspelt top-level key",
         lambda m, d: ["run", "--suite", str(suite(d, "tasks: [mmlu]\nmodel: {}\n"))], 2,
         "{d}/mysuite.yaml: unknown key 'model'; allowed: description, models, tasks, real_tasks"),
    Case("suite-task-key", "suite YAML task entry with an unknown key",
         lambda m, d: ["run", "--suite", str(suite(d, "tasks:\n  - {task: mmlu, limt: 3}\n")), "--base", str(m.llama)],
         2, "{d}/mysuite.yaml: tasks[0]: unknown key 'limt'; allowed: task, alias, data_dir, "
         "limit, num_fewshot, formulation, on_error, extra"),
    Case("suite-wrong-type", "suite YAML task entry whose limit is not an integer",
         lambda m, d: ["run", "--suite", str(suite(d, "tasks:\n  - {task: mmlu, limit: ten}\n")),
                       "--base", str(m.llama)],
         2, "{d}/mysuite.yaml: tasks[0].limit: expected an integer, got 'ten'"),
    Case("gate-unknown-task", "gate file naming a task the run does not have", _gate_task, 2, "unusable input: {d}/gate.yaml: rule multimodal[0]: unknown task 'mmmu' for model 'iaa' in {d}/runs/r (tasks: mmlu, ceval, mme, mmbench_en, vqav2)"),
    Case("gate-unknown-key", "gate file with an unknown top-level key", _gate_key, 2, "unusable input: {d}/gate.yaml: unknown key 'thresholds'; allowed: version, text, multimodal, regression"),
    Case("gate-duplicate-key", "gate file giving one key twice (YAML would keep the last silently)",
         lambda m, d: gate_file(d, "version: 1\ntext:\n  iaa: {max_flips: 0}\n  iaa: {}"), 2,
         "unusable input: {d}/gate.yaml: duplicate key 'iaa' (line 4)"),
    Case("train-data-not-a-list", "training JSON that is an object, not a list of records",
         lambda m, d: train(m, d, {"conversations": []}), 2, "{d}/llava.json: expected a JSON list of conversation records, got a JSON dict"),
    Case("train-data-invalid-json", "training JSON cut mid-way",
         lambda m, d: train(m, d, '[\n  {"id": "a", "conversations": [\n'), 2, "{d}/llava.json: invalid JSON at line 3, column 1 (Expecting value)"),
    Case("train-no-conversations", "training record without its conversations field",
         lambda m, d: train(m, d, [{"id": "a", "image": "images/a.png"}]), 2, "{d}/llava.json record 0 (id 'a'): field 'conversations' missing"),
    Case("train-turn-order", "training record whose turns do not alternate human, gpt",
         lambda m, d: train(m, d, [{"id": "a", "conversations": turns("human", "human")}]), 2, "{d}/llava.json record 0 (id 'a'): field conversations[1].from is 'human', expected 'gpt' (turns alternate human, gpt)"),
    Case("train-image-missing", "training record naming an image that is not in the image folder",
         lambda m, d: train(m, d, [{"id": "b", "image": "images/b.png", "conversations": turns("human", "gpt")}]), 2, "{d}/llava.json record 0 (id 'b'): field 'image': file {d}/images/b.png not found; images are read relative to {d} (set the image folder with --image-folder)"),
    Case("train-family", "train llava (LLaVA-style training is a library API)",
         lambda m, d: ["train", "llava", "--data", str(d), "--out", str(d / "ckpt")], 2, "train 'llava': only 'iaa' is a command; LLaVA-style training is a library API (iaa_eval.train.train_llava_stage)"),
    Case("train-init-and-base", "train with both --init and --base",
         lambda m, d: train(m, d, [], "--init", str(d)), 2, "--init and --base cannot be combined: the checkpoint given with --init already fixes its base, vision tower, insertion positions and image token"),
    Case("train-micro-batch", "train with --micro-batch-size larger than --batch-size",
         lambda m, d: train(m, d, [], "--batch-size", "4", "--micro-batch-size", "6"), 2, "--micro-batch-size 6 exceeds --batch-size 4"),
    Case("limit-zero", "--limit 0", lambda m, d: run(llama(m), "mmlu", None, d, "--limit", "0"), 2, "iaa-eval run: error: argument --limit: must be a positive integer, got 0"),
    Case("limit-negative", "--limit -5", lambda m, d: run(llama(m), "mmlu", None, d, "--limit", "-5"), 2, "iaa-eval run: error: argument --limit: must be a positive integer, got -5"),
    Case("data-dir-missing", "--data-dir that does not exist",
         lambda m, d: run(llama(m), "mmlu", d / "nowhere", d), 2, "--data-dir '{d}/nowhere': no such directory"),
    Case("run-dir-is-a-file", "--output-path naming a file where a folder is expected", _output_file, 2, "run directory {d}/runs/r: not writable (Not a directory); pass --output-path with a writable folder"),
    Case("run-dir-read-only", "--output-path in a read-only folder (skipped as root: root writes anyway)",
         _read_only, 2, "run directory {d}/runs/r: not writable (Permission denied); pass --output-path with a writable folder", needs_non_root=True),
    # ---- names that become paths
    Case("run-id-escapes", "--run-id ../escaped (would write beside --output-path)",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--run-id", "../escaped"), 2,
         "--run-id '../escaped' holds a path separator (a path is not a name); a name is one file "
         "or folder name"),
    Case("run-id-absolute", "--run-id that is an absolute path",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--run-id", str(d / "abs")), 2,
         "--run-id '{d}/abs' holds a path separator (a path is not a name)"),
    Case("model-name-escapes", "--model '../../x=hf:...' (samples would go outside the run)",
         lambda m, d: run(f"../../x=hf:{m.llama}", "mmlu", mmlu(d), d), 2,
         "model name '../../x' holds a path separator (a path is not a name)"),
    Case("suite-alias-escapes", "suite YAML task alias '../x' (results and samples use it)",
         lambda m, d: ["run", "--suite", str(suite(d, "tasks:\n  - {task: mmlu, alias: ../x}\n")),
                       "--base", str(m.llama)],
         2, "{d}/mysuite.yaml: tasks[0].alias: holds a path separator (a path is not a name)"),
    Case("results-run-id-escapes", "report of a results.json whose run_id is ../../hijacked",
         lambda m, d: report(d, lambda r: r.update(run_id="../../hijacked")), 2,
         "{d}/runs/r/results.json: run_id '../../hijacked' holds a path separator"),
    Case("results-model-name-escapes", "report of a results.json naming a model ../x",
         lambda m, d: report(d, lambda r: r["results"].update({"../x": r["results"].pop("iaa")})),
         2,
         "{d}/runs/r/results.json: results: model name '../x' holds a path separator"),
    # ---- results files
    Case("results-metric-string", "report of a results.json whose metric is a string",
         lambda m, d: report(d, _metric_string), 2,
         "{d}/runs/r/results.json: results.base.mmlu.metrics.acc: expected a number, got '0.5'"),
    Case("results-empty", "report of a run with no task results",
         lambda m, d: report(d, lambda r: r.update(results={})), 2,
         "{d}/runs/r/results.json: no task results (the run stopped before its first task "
         "finished?)"),
    # ---- the gate fails closed
    Case("gate-nan-threshold", "gate threshold .nan (every comparison with NaN is false)",
         lambda m, d: gate_file(d, "version: 1\ntext:\n  iaa: {max_drop: .nan}\n"), 2,
         "unusable input: {d}/gate.yaml: text.iaa.max_drop: expected a finite number, got nan"),
    Case("gate-inf-threshold", "gate threshold .inf",
         lambda m, d: gate_file(d, "version: 1\nmultimodal:\n  - {kind: iaa, task: mme, "
                                "min: -.inf}\n"), 2,
         "unusable input: {d}/gate.yaml: multimodal[0].min: expected a finite number, got -inf"),
    Case("gate-negative-threshold", "gate threshold max_flips: -1",
         lambda m, d: gate_file(d, "version: 1\ntext:\n  iaa: {max_flips: -1}\n"), 2,
         "unusable input: {d}/gate.yaml: text.iaa.max_flips: expected a number >= 0, got -1"),
    Case("gate-rule-without-limit", "gate multimodal rule with neither min nor min_gain",
         lambda m, d: gate_file(d, "version: 1\nmultimodal:\n  - {kind: iaa, task: mme}\n"), 2,
         "unusable input: {d}/gate.yaml: rule multimodal[0] compared nothing: it sets neither min "
         "nor min_gain"),
    Case("gate-text-rule-without-limit", "gate text rule with no limit",
         lambda m, d: gate_file(d, "version: 1\ntext:\n  iaa: {tasks: [mmlu]}\n"), 2,
         "unusable input: {d}/gate.yaml: rule text.iaa compared nothing: it sets none of "
         "max_flips, max_drop, report_only"),
    Case("gate-no-rules", "gate file with no rule at all",
         lambda m, d: gate_file(d, "version: 1\n"), 2,
         "unusable input: {d}/gate.yaml: no rule, so the gate compared nothing"),
    Case("gate-against-disjoint", "gate --against a run sharing no task with this one",
         _gate_against_disjoint, 2,
         "unusable input: {d}/gate.yaml: rule regression compared nothing: --against {d}/runs/old "
         "shares no model/task result with {d}/runs/r"),
    Case("gate-against-no-regression", "gate --against, thresholds without a regression section",
         _gate_against_no_section, 2,
         "unusable input: --against {d}/runs/old: the thresholds have no 'regression' section, so "
         "nothing would be compared with the earlier run"),
    # ---- command line and run state
    Case("fewshot-negative", "--num-fewshot -1",
         lambda m, d: run(llama(m), "mmlu", mmlu(d), d, "--num-fewshot", "-1"), 2,
         "iaa-eval run: error: argument --num-fewshot: must be an integer >= 0, got -1"),
    Case("tasks-empty", "--tasks , (no task names)", lambda m, d: run(llama(m), ",", None, d), 2,
         "--tasks ',': no task names; e.g. --tasks mmlu,mme"),
    Case("data-dir-other-task", "--data-dir for a task not in the run (a typo)",
         lambda m, d: run(llama(m), "mmlu", None, d, "--data-dir", f"mmlu={mmlu(d)}",
                          "--data-dir", f"cevall={d}"), 2,
         "--data-dir cevall=...: task 'cevall' is not in this run (tasks: mmlu)"),
    Case("rerun-other-tasks", "rerunning a run id with other tasks (the earlier ones would vanish)",
         _rerun_other_tasks, 2,
         "run directory {d}/runs/r holds results this run would drop from its results.json "
         "(base/ceval, base/mme",
         keeps="ceval"),
    Case("sigterm", "SIGTERM once the first of two tasks is written", _two_tasks, 130,
         "interrupted: finished requests are kept in {d}/runs/r/cache.sqlite; rerun the same "
         "command to resume",
         during=_sigterm, keeps="mmlu"),
    Case("disk-full", "the disk fills up while the second task's results are written",
         _two_tasks, 2,
         "cannot write {d}/runs/r/results.json (No space left on device); what was written before "
         "it is kept",
         during=_disk_full, keeps="mmlu"),
    Case("cache-foreign-table", "a cache.sqlite whose requests table has another layout",
         _foreign_cache, 2,
         "{d}/runs/r/cache.sqlite: not an iaa-eval request cache (table 'requests' has columns "
         "id, blob; expected fingerprint, key, value)"),
    Case("broken-pipe", "iaa-eval miniworld info | head (the reader goes away)",
         lambda m, d: ["miniworld", "info"], 141, "", during=_broken_pipe),
    Case("miniworld-build-no-out", "miniworld build without --out (would replace the shipped trio)",
         lambda m, d: ["miniworld", "build"], 2,
         "miniworld build: give --out FOLDER (the shipped trio "),
    Case("hub-unreachable", "a hub id while the hub cannot be reached (fails at once, no retries)",
         lambda m, d: run("base=hf:iaa-eval-tests/no-such-model", "mmlu", mmlu(d), d), 2,
         "tokenizer 'iaa-eval-tests/no-such-model': not a local directory, not in the local hub "
         "cache, and the Hugging Face hub is unreachable (no connection to 127.0.0.1:9: "
         "Connection refused)",
         during=_hub_unreachable),
    Case("tokenizer-no-pad-no-eos", "a tokenizer with neither a pad nor an EOS token",
         _no_pad_no_eos, 2,
         "tokenizer '{d}/model': has neither a pad token nor an EOS token, so answers cannot be "
         "batched or ended"),
    Case("iaa-positions-past-layers", "an IAA config.json inserting after layer 7 of 3",
         _iaa_positions, 2,
         "{d}/ckpt/config.json: insert_after_layers[1]=7 is out of range for num_hidden_layers=3"),
    Case("train-positions-past-layers", "train iaa --insert-after past the base's layer count",
         lambda m, d: train(m, d, [{"id": "a", "image": "images/a.png",
                                    "conversations": turns("human", "gpt")}],
                            "--image-token", "<pad>", "--insert-after", "0,5"), 2,
         "with --insert-after 0,5: insert_after_layers[1]=5 is out of range for "
         "num_hidden_layers=2"),
]


def render_doc() -> str:
    """``docs/bad_inputs.md``: every case, its exit code and the error it gives."""
    lines = [
        "# Bad-input catalogue",
        "",
        "Every broken input below is a case of `tests/bad_inputs/test_catalogue.py`, which checks the exit",
        "code and that the message (stderr; stdout for `gate`) contains the text shown, `<d>` standing for",
        "the folder the broken input lives in. With `--on-error skip` a bad row becomes a counted skip in",
        "`results.json` (`skipped`, `skip_reasons`) and the run succeeds. An input that only looks",
        "broken is read as shown by the run's samples file (exit 0). Where the world changes",
        "while a command runs (a signal, a full disk, a closed pipe, an unreachable hub), the test",
        "makes it so; \"results.json keeps\" names a finished task that must survive. No case may",
        "print a traceback (that takes `--debug`). Generated from the table in",
        "`tests/bad_inputs/cases.py`: `python -m tests.bad_inputs.cases > docs/bad_inputs.md`.",
        "",
        "| case | broken input | exit | error (or recorded skip) |",
        "| --- | --- | --- | --- |",
    ]
    for case in CASES:
        shown = case.message.replace("{d}", "<d>").replace("|", "\\|")
        if case.skipped is not None:
            shown = f"skipped: {case.skipped}; reason: {shown}"
        if case.samples is not None:
            shown = f"none; {case.samples} holds: {shown}"
        shown = f"`{shown}`" if shown else "(nothing: it stops quietly)"
        if case.keeps is not None:
            shown += f"; results.json keeps `{case.keeps}`"
        what = case.what.replace("|", "\\|")
        lines.append(f"| `{case.id}` | {what} | {case.exit_code} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_doc())
