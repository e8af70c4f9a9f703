"""Weight fingerprints cover every byte: IAA shares the base model's text results on equal ones."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from iaa_eval.models.base import _HOST_CHUNK_BYTES, fingerprint_weights

LARGE = _HOST_CHUNK_BYTES // 4 + 3_000_000  # float32 elements: > 4M (once sampled above), > a chunk


@pytest.fixture
def seed() -> int:
    value = random.randrange(1 << 30)
    logging.getLogger(__name__).warning("seed=%d", value)  # shown on failure, to reproduce it
    return value


def test_one_changed_element_of_a_large_tensor_changes_the_fingerprint(seed: int) -> None:
    torch.manual_seed(seed)
    weights = {"embed": torch.randn(LARGE), "norm": torch.ones(32)}
    before = fingerprint_weights({"hidden_size": 32}, weights, "text")
    big = weights["embed"]
    rng = random.Random(seed)
    # anywhere, in the second host chunk, and the first and last elements
    spots = [rng.randrange(LARGE), rng.randrange(_HOST_CHUNK_BYTES // 4, LARGE), 0, LARGE - 1]
    for spot in spots:
        old = big[spot].clone()
        big[spot] = torch.nextafter(old, old + 1)  # the smallest possible change
        assert fingerprint_weights({"hidden_size": 32}, weights, "text") != before, (seed, spot)
        big[spot] = old
    assert fingerprint_weights({"hidden_size": 32}, weights, "text") == before


def test_a_swap_neither_a_strided_sample_nor_a_sum_can_see(seed: int) -> None:
    """Whole numbers sum exactly in any order, so swapping two neighbours off a sampling stride
    kept the old fingerprint (every 5th element + the last 1024 + the sum) the same."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    weights = {"embed": torch.randint(-8, 8, (LARGE,)).float()}
    before = fingerprint_weights({}, weights, "text")
    big = weights["embed"]
    spots = (5 * rng.randrange(LARGE // 5 - 300) + 1 for _ in range(100))  # off the stride of 5
    spot = next(i for i in spots if big[i] != big[i + 1])
    big[spot], big[spot + 1] = big[spot + 1].clone(), big[spot].clone()
    assert fingerprint_weights({}, weights, "text") != before, (seed, spot)


def test_equal_weights_give_equal_fingerprints_wherever_they_are_held(seed: int) -> None:
    torch.manual_seed(seed)
    matrix = torch.randn(64, 48, dtype=torch.bfloat16)
    transposed = matrix.t().contiguous().t()  # same values, other memory layout
    assert not transposed.is_contiguous()
    digest = fingerprint_weights({}, {"w": matrix, "b": torch.zeros(3)}, "mm")
    assert fingerprint_weights({}, {"b": torch.zeros(3), "w": transposed}, "mm") == digest
    as_float = {"w": matrix.float(), "b": torch.zeros(3)}
    assert fingerprint_weights({}, as_float, "mm") != digest  # dtype counts
    assert fingerprint_weights({}, {"w": matrix, "b": torch.zeros(3)}, "text") != digest
