"""Small, seeded training stages for the IAA and LLaVA-style families (the library API).

Both families train on the same :class:`Example` list with the same :class:`TrainConfig`
(:mod:`iaa_eval.train.loop`), so their budgets are comparable by construction.

Example:
    >>> history = train_iaa_stage(iaa, tokenizer, image_processor, examples, stage=2,
    ...                           config=TrainConfig(steps=300, lr=1e-3, batch_size=16, seed=0))
    >>> history = train_llava_stage(llava, processor, examples, stage=2, config=TrainConfig(...),
    ...                             text_replay=["plain text ..."], replay_ratio=0.15)
"""

from iaa_eval.train.examples import Example
from iaa_eval.train.iaa import train_iaa_stage
from iaa_eval.train.llava import train_llava_stage
from iaa_eval.train.loop import TrainConfig

__all__ = ["Example", "TrainConfig", "train_iaa_stage", "train_llava_stage"]
