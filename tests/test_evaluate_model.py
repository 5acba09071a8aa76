"""evaluate_model's shuffled control: every clip judged against another prompt's classes."""
import pytest

from training.evaluate_model import derangement


def test_derangement_moves_every_prompt():
    items = [f"p{i}" for i in range(18)]
    for seed in range(5):
        out = derangement(items, seed)
        assert sorted(out) == sorted(items) and all(a != b for a, b in zip(items, out))
    assert derangement(["a", "b"]) == ["b", "a"]


def test_derangement_of_one_prompt_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="at least 2"):
        derangement(["thunder"])
