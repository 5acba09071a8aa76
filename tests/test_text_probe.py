"""The text probe: same masks, timesteps and noise for right, shuffled and null captions."""
import torch

from impact_rt.config import preset
from impact_rt.model import IMPACT, randomize_
from training.latent_store import LatentStore
from training.text_probe import probe


def _store(n, caption_id, text_states):
    g = torch.Generator().manual_seed(0)
    return LatentStore(latents=torch.randn(n, 8, 256, 16, generator=g).half(), clip=torch.arange(n),
                       caption_id=caption_id, split=torch.zeros(n, dtype=torch.long), text_states=text_states.half(),
                       text_mask=torch.ones(len(text_states), 78, dtype=torch.bool), meta={})


def _model():
    m = randomize_(IMPACT(preset("test")), seed=0, scale=0.5)
    return m.eval()


def test_one_caption_for_all_gives_no_gain_and_distinct_captions_do():
    m = _model()
    states = torch.randn(4, 78, m.cfg.text_dim, generator=torch.Generator().manual_seed(1))
    same = probe(m, _store(4, torch.zeros(4, dtype=torch.long), states), rows=4, batch=4, repeats=1, mask_ratios=(0.9,))
    assert same["gain_vs_shuffled"] == 0.0 and same["rows"] == 4  # identical inputs, identical noise
    diff = probe(m, _store(4, torch.arange(4), states), rows=4, batch=4, repeats=1, mask_ratios=(0.9,))
    assert diff["gain_vs_shuffled"] != 0.0 and diff["right"] == diff["right"]
    again = probe(m, _store(4, torch.arange(4), states), rows=4, batch=4, repeats=1, mask_ratios=(0.9,))
    assert again == diff  # seeded: a probe is repeatable


def test_uncaptioned_rows_are_left_out():
    m = _model()
    states = torch.randn(2, 78, m.cfg.text_dim)
    r = probe(m, _store(4, torch.tensor([0, -1, 1, -1]), states), rows=10, batch=4, repeats=1, mask_ratios=(1.0,))
    assert r["rows"] == 2
