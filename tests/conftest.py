"""Hermetic fixtures: tiny models built locally with save_pretrained, reference data from ../shared.

Nothing here touches the network. Models are tiny (hidden 32, 2 layers) with a byte-level BPE
tokenizer trained on a few sentences, so every test runs in seconds on CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"
GOLDEN = SHARED / "golden"

_CORPUS = [
    "The capital of Veloria is Brask. The answer is A. Question: Which is right?",
    "Answer with the option's letter from the given choices directly. Yes no maybe.",
    "以下是中国关于会计考试的单项选择题，请选出其中的正确答案。答案：A B C D",
    "USER: <image> What colour is the shape? ASSISTANT: red blue green circle square",
    "0123456789 + - * / = ( ) . , ; : ? ! abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test cleanly when that reference file is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} not present on this machine")
    return path


def build_tokenizer(extra_special: list[str] | None = None):  # noqa: ANN201
    """A byte-level BPE ``PreTrainedTokenizerFast`` with BOS/EOS/PAD, trained on ``_CORPUS``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>", *(extra_special or [])]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=extra_special or [],
    )


def tiny_llama_config(vocab_size: int, **overrides: object):  # noqa: ANN201
    """Llama of hidden 32, 2 layers, GQA 4/2 heads."""
    from transformers import LlamaConfig

    values = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_clip_config():  # noqa: ANN201
    """CLIP vision tower: 32 px images, 8 px patches (16 patches + CLS), width 32, 2 layers."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32,
    )


def save_tiny_llama(path: Path, seed: int = 0) -> Path:
    """Write a random tiny Llama + tokenizer to ``path``."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer))).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_llava(path: Path, seed: int = 0) -> Path:
    """Write a random tiny llava-hf model + processor (CLIP image processor, ``<image>`` token)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer(extra_special=["<image>"])
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=tiny_clip_config(), text_config=tiny_llama_config(len(tokenizer)),
        image_token_id=image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", image_seq_length=16,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
        vision_feature_select_strategy="default", image_token="<image>", num_additional_image_tokens=1,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved with save_pretrained (session-wide, read-only by convention)."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llava-hf model saved with save_pretrained."""
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture
def keep_torch_threads() -> object:
    """Restore torch's thread count after a test that runs the CLI in-process (``--threads`` sets it
    for the whole pytest process)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
