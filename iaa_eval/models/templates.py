"""Conversation templates: how a user's question (and image placeholder) becomes a prompt.

A tokenizer that ships a chat template (Llama-3-Instruct, llava-hf processors) uses it, with the
LLaVA/Vicuna system prompt that LLaVA-1.5 and IAA evaluate with. A tokenizer without one (the
mini-world's) uses the Vicuna-style plain template that LLaVA-1.5 trained with. Training and
evaluation go through the same functions, so their prompts cannot drift apart.
"""

from __future__ import annotations

from typing import Any

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
PLAIN_TEMPLATE = "USER: {user} ASSISTANT:"


def user_content(text: str, image_placeholder: str | None) -> str:
    """The first user turn: the image placeholder and a newline before the question (LLaVA, IAA)."""
    return f"{image_placeholder}\n{text}" if image_placeholder else text


def build_prompt(tokenizer: Any, text: str, image_placeholder: str | None = None,
                 system: bool = True) -> str:
    """The full prompt up to where the assistant's answer starts."""
    user = user_content(text, image_placeholder)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}] if system else []
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(user=user)


def training_text(prompt: str, answer: str, eos_token: str) -> tuple[str, str]:
    """(prompt, target) for supervised training: the loss covers the target only."""
    return prompt, f" {answer}{eos_token}"
