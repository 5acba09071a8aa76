"""Tiny models for tests: built in milliseconds."""
import torch

from impact_rt.config import preset
from impact_rt.model import IMPACT, randomize_
from impact_rt.text_conditioner import HashConditioner


def tiny_model(seed: int = 0, scale: float = 1.0) -> IMPACT:
    torch.manual_seed(seed)
    return randomize_(IMPACT(preset("test")), seed=seed, scale=scale).eval()


def tiny_condition(model: IMPACT, prompts):
    cond = HashConditioner(model.cfg.text_len, model.cfg.text_dim)
    states, mask = cond.encode(prompts)
    return model.project_condition(states, mask)
