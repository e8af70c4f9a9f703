"""`iaa-eval train iaa` end to end on tiny models: the checkpoint loads, its text workflow is the
base bit for bit, the trained groups changed, the flags that cannot work say so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaForCausalLM

from iaa_eval.cli import main
from iaa_eval.errors import IAAEvalError, UsageError
from iaa_eval.models.base import ModelSpec
from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.iaa.adapter import IAAModel
from iaa_eval.train.job import IAATrainJob, image_token_id, load_job, positions, train_iaa
from tests.conftest import build_tokenizer, tiny_clip_config, tiny_llama_config
from tests.iaa_helpers import IMAGE_TOKEN, random_image

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``base/`` (3-layer Llama whose tokenizer has <image>), ``clip/`` (tower + processor) and
    ``data/`` (LLaVA JSON: a multi-turn record, single-turn ones, a text-only one; random images)."""
    root = tmp_path_factory.mktemp("train_world")
    tokenizer = build_tokenizer(extra_special=[IMAGE_TOKEN])
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer), num_hidden_layers=3)).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    CLIPVisionModel(tiny_clip_config()).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    records, images = [], root / "data" / "images"
    images.mkdir(parents=True)
    for k in range(4):
        random_image(100 + k, size=(40 + 4 * k, 30)).save(images / f"{k}.png")
        turns = [{"from": "human", "value": "<image>\nWhat colour is the shape?"}, {"from": "gpt", "value": "red"}]
        if k == 0:
            turns += [{"from": "human", "value": "Is it round?"}, {"from": "gpt", "value": "Yes"}]
        records.append({"id": str(k), "image": f"images/{k}.png", "conversations": turns})
    records.append({"id": "text", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]})
    (root / "data" / "llava.json").write_text(json.dumps(records))
    return root


def train(world: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "iaa", "--data", str(world / "data"), "--out", str(out), "--steps", "3", "--batch-size", "3",
            "--lr", "1e-2", "--threads", "2", *extra]


def fresh(world: Path, out: Path, *extra: str) -> list[str]:
    return train(world, out, "--base", str(world / "base"), "--vision", str(world / "clip"), "--insert-after", "0,2",
                 *extra)


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return IAAForCausalLM.from_pretrained(folder).state_dict()


def test_stage2_checkpoint_loads_keeps_the_base_and_trains_the_insertions(world: Path, tmp_path: Path) -> None:
    assert main(fresh(world, tmp_path / "ckpt")) == 0
    model = IAAForCausalLM.from_pretrained(tmp_path / "ckpt")
    base = LlamaForCausalLM.from_pretrained(world / "base").eval()
    ids = torch.randint(3, base.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(21))
    with torch.no_grad():
        assert torch.equal(model(ids, workflow="text").logits, base(ids).logits)
    for k, after in enumerate(model.config.insert_after_layers):  # copies of the layers they follow, then trained
        trained = model.model.condition_layers[k].state_dict()
        copied = base.model.layers[after].state_dict()
        assert any(not torch.equal(trained[name], copied[name]) for name in copied), f"insertion layer {k} unchanged"
    log = json.loads((tmp_path / "ckpt" / "train_log.json").read_text())
    assert len(log["losses"]) == 3 and all(torch.isfinite(torch.tensor(log["losses"])))
    assert log["data"] == {"file": str(world / "data" / "llava.json"), "image_folder": str(world / "data"),
                           "records": 5, "examples": 6, "with_image": 5}
    assert log["layout"] == "official" and log["insert_after_layers"] == [0, 2] and log["job"]["stage"] == 2
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == "IAA"
    IAAModel(ModelSpec("iaa", "iaa", str(tmp_path / "ckpt")))  # the eval adapter finds tokenizer and processor


def test_micro_batches_from_the_command_line(world: Path, tmp_path: Path) -> None:
    assert main(fresh(world, tmp_path / "ckpt", "--stage", "1", "--micro-batch-size", "2")) == 0
    log = json.loads((tmp_path / "ckpt" / "train_log.json").read_text())
    assert log["train_config"]["batch_size"] == 3 and log["train_config"]["micro_batch_size"] == 2
    assert len(log["losses"]) == 3


def test_stage1_then_stage2_with_init(world: Path, tmp_path: Path) -> None:
    assert main(fresh(world, tmp_path / "s1", "--stage", "1")) == 0
    assert main(train(world, tmp_path / "s2", "--init", str(tmp_path / "s1"))) == 0
    base = LlamaForCausalLM.from_pretrained(world / "base").state_dict()
    s1, s2 = tensors(tmp_path / "s1"), tensors(tmp_path / "s2")
    stage1_changed = {k for k, v in s1.items() if "condition" in k and not torch.equal(v, s2[k])}
    assert stage1_changed and all("mm_projector" not in k for k in stage1_changed)
    assert not torch.equal(s1["model.mm_projector.0.weight"], s2["model.mm_projector.0.weight"])
    for key, value in base.items():  # stage 1 left the copies untouched; the base is the base throughout
        assert torch.equal(s1[key], value) and torch.equal(s2[key], value), key
        if key.startswith("model.layers.2."):
            assert torch.equal(s1[key.replace("model.layers.2.", "model.condition_layers.1.")], value)
    assert IAAForCausalLM.from_pretrained(tmp_path / "s2").config.insert_after_layers == [0, 2]


def test_qwen2_base_is_written_in_our_layout(tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(extra_special=[IMAGE_TOKEN])
    config = Qwen2Config(vocab_size=len(tokenizer) + 8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # headroom:
    # AutoTokenizer reloads it as a Qwen2 tokenizer, which adds a token
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    CLIPVisionModel(tiny_clip_config()).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    (tmp_path / "data.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "Hi"},
                                                                       {"from": "gpt", "value": "hi"}]}]))
    outcome = train_iaa(IAATrainJob(data=tmp_path / "data.json", out=tmp_path / "out", base=str(tmp_path / "qwen"),
                                    vision=str(tmp_path / "clip"), insert_after="1", steps=1, progress=False))
    assert len(outcome.losses) == 1 and outcome.examples == 1
    assert IAAForCausalLM.from_pretrained(tmp_path / "out").config.text_config.model_type == "qwen2"


JOB = ["train", "iaa", "--job"]


def _job(d: Path, text: str) -> str:
    (d / "job.yaml").write_text(text)
    return str(d / "job.yaml")


def _gpt2(d: Path) -> str:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=64).save_pretrained(d / "gpt2")
    return str(d / "gpt2")


def _no_image_token(d: Path) -> str:
    tokenizer = build_tokenizer()
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(d / "plain")
    tokenizer.save_pretrained(d / "plain")
    return str(d / "plain")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (lambda w, d: ["train", "llava", "--data", str(w / "data"), "--out", str(d / "o")],
         "train 'llava': only 'iaa' is a command; LLaVA-style training is a library API "
         "(iaa_eval.train.train_llava_stage)"),
        (lambda w, d: train(w, d / "o", "--init", str(d), "--base", str(w / "base")),
         "--init and --base cannot be combined"),
        (lambda w, d: train(w, d / "o", "--base", str(w / "base")),
         "give --base and --vision (a fresh IAA model), or --init (an IAA checkpoint to continue)"),
        (lambda w, d: train(w, d / "o", "--base", _gpt2(d), "--vision", str(w / "clip")),
         "model_type 'gpt2' is not a base IAA can wrap; supported: llama, mistral, qwen2"),
        (lambda w, d: fresh(w, d / "o")[:-2] + ["--insert-after", "0,7"],
         "insert_after_layers[1]=7 is out of range for num_hidden_layers=3"),
        (lambda w, d: train(w, d / "o", "--base", str(w / "base"), "--vision", str(w / "clip")),
         "insert_after_layers[2]=5 is out of range for num_hidden_layers=3"),  # the default, IAA-14
        (lambda w, d: train(w, d / "o", "--base", _no_image_token(d), "--vision", str(w / "clip")),
         "the base's tokenizer has none of the image tokens <|reserved_special_token_44|>, <image>"),
        (lambda w, d: fresh(w, d / "o", "--image-token", "<nope>"), "--image-token '<nope>': not a token"),
        (lambda w, d: fresh(w, w / "base"), "already holds a checkpoint; pass a new folder"),
        (lambda w, d: train(w, d / "o", "--init", str(d / "missing")), "--init '{d}/missing': no such directory"),
        (lambda w, d: fresh(w, d / "o", "--vision", str(d / "nope")), "--vision '{d}/nope': no such directory"),
        (lambda w, d: fresh(w, d / "o", "--data", str(d)), "{d}: expected exactly one *.json file"),
        (lambda w, d: fresh(w, d / "o", "--lr", "0"), "--lr 0.0: must be a positive number"),
        (lambda w, d: fresh(w, d / "o", "--batch-size", "4", "--micro-batch-size", "6"),
         "--micro-batch-size 6 exceeds --batch-size 4"),
        (lambda w, d: [*JOB, _job(d, f"{{data: {w}/data, out: {d}/o, batch_size: 4}}"),
                       "--init", str(d), "--micro-batch-size", "6"],
         "--job {d}/job.yaml: --micro-batch-size 6 exceeds --batch-size 4"),
        (lambda w, d: [*JOB, _job(d, f"data: {w}/data\nout: {d}/o\nstep: 3\n")],
         "--job {d}/job.yaml: unknown key 'step'; allowed: data, out, base"),
    ],
    ids=["family", "init-and-base", "no-vision", "unsupported-base", "positions", "default-positions",
         "no-image-token", "unknown-image-token", "out-exists", "init-missing", "vision-missing", "no-json", "lr",
         "micro-batch", "job-and-flags", "job-unknown-key"],
)
def test_flags_that_cannot_work(argv, message: str, world: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv(world, tmp_path)) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("iaa-eval: error: ")]
    assert message.replace("{d}", str(tmp_path)) in line and "Traceback" not in err


@pytest.mark.parametrize(("part", "flag"), [("base", "--base"), ("clip", "--vision")])
def test_a_base_or_tower_without_a_weight_is_refused_naming_it(
    part: str, flag: str, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training never starts from a random weight: the base LM and the vision tower are loaded
    through the loaders' check, which names the weight the folder lacks."""
    folder = tmp_path / part
    shutil.copytree(world / part, folder)
    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if "layers.1.mlp" in k and k.endswith("weight"))
    del weights[key]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    argv = fresh(world, tmp_path / "o")
    argv[argv.index(flag) + 1] = str(folder)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "1 weights missing from the checkpoint" in err and key.split("layers.")[-1] in err


def test_a_job_file_under_the_flags(tmp_path: Path) -> None:
    path = Path(_job(tmp_path, "data: d\nout: o\nbase: b\nvision: v\nlr: 0.5\nsteps: 3\nlimit: 9"))
    job = load_job({"lr": 0.1, "limit": 2}, path)
    assert job == IAATrainJob(Path("d"), Path("o"), base="b", vision="v", lr=0.1, steps=3, limit=2)
    assert load_job({"data": "d", "out": "o", "init": "c"}) == IAATrainJob(Path("d"), Path("o"),
                                                                          init=Path("c"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: ten\n", "job.yaml: steps: expected an integer, got 'ten'"),
        ("batch_size: 0\n", "job.yaml: batch_size: expected a number >= 1, got 0"),
        ("lr: .nan\n", "job.yaml: lr: expected a finite number, got nan"),
        ("lr: 1\nlr: 2\n", "job.yaml: duplicate key 'lr' (line 6)"),
        ("progress: 1\n", "job.yaml: progress: expected true or false, got 1"),
        ("init: c\n", "job.yaml: --init and --base cannot be combined"),
    ],
)
def test_bad_job_files(tmp_path: Path, text: str, message: str) -> None:
    path = _job(tmp_path, "data: d\nout: o\nbase: b\nvision: v\n" + text)
    with pytest.raises(IAAEvalError, match="job.yaml: ") as exc:
        load_job({}, Path(path))
    assert message in str(exc.value)
    with pytest.raises(UsageError, match="give --data and --out"):
        load_job({"base": "b"})


@pytest.mark.parametrize(("text", "expected"), [(None, "iaa-14"), ("iaa-14", "iaa-14"), ("0, 1,5", [0, 1, 5])])
def test_positions(text: str | None, expected: object) -> None:
    assert positions(text) == expected


def test_image_token_defaults_and_choice() -> None:
    tokenizer = build_tokenizer(extra_special=["<|reserved_special_token_44|>", IMAGE_TOKEN, "<img>"])
    assert image_token_id(tokenizer, None) == tokenizer.convert_tokens_to_ids("<|reserved_special_token_44|>")
    assert image_token_id(tokenizer, "<img>") == tokenizer.convert_tokens_to_ids("<img>")
    with pytest.raises(UsageError, match="--insert-after 'a,b'"):
        positions("a,b")
