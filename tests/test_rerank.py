import pytest
import torch

from impact_rt.bundle import BundleError
from impact_rt.config import ConfigError
from impact_rt.rerank import Scorer, ScorerConfig, candidate_seeds, choose

TINY = ScorerConfig(token_dim=128, grid_time=64, grid_freq=4, text_dim=16, dim=32, depth=1, heads=2, embed=16)


def test_candidate_zero_is_the_seed_and_the_rest_are_distinct_and_fixed():
    got = candidate_seeds([0, 7, 2 ** 63 - 1], 4)
    assert got[0::4] == [0, 7, 2 ** 63 - 1]
    assert len(set(got)) == 12 and all(0 <= s < 2 ** 63 for s in got)
    assert candidate_seeds([7], 4) == got[4:8]            # a seed's candidates do not depend on its batch
    assert candidate_seeds([7], 2) == got[4:6]            # nor on K
    assert candidate_seeds([3, 4], 1) == [3, 4]


def test_choose_picks_the_best_of_each_group():
    s = torch.tensor([0.1, 0.9, 0.2, 0.5, 0.4, 0.3])
    assert choose(s, 3).tolist() == [1, 3]
    assert choose(s, 1).tolist() == list(range(6))
    with pytest.raises(ConfigError):
        choose(s, 4)


def test_scores_are_cosines_and_ignore_padding():
    torch.manual_seed(0)
    sc = Scorer(TINY).eval()
    tok, st = torch.randn(3, 256, 128), torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 0, 0, 0]] * 3, dtype=torch.bool)
    s = sc.score(tok, st, mask)
    assert s.shape == (3,) and (s.abs() <= 1 + 1e-5).all()
    st2 = st.clone()
    st2[:, 2:] = 100.0                                     # padded states must not matter
    torch.testing.assert_close(sc.score(tok, st2, mask), s)
    with pytest.raises(ConfigError):
        sc.score(torch.randn(3, 255, 128), st, mask)


def test_bundle_round_trip_absent_and_corrupt(tmp_path):
    torch.manual_seed(0)
    sc = Scorer(TINY).eval()
    assert Scorer.from_bundle(tmp_path) is None
    sc.save(tmp_path)
    back = Scorer.from_bundle(tmp_path)
    tok, st, m = torch.randn(2, 256, 128), torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    torch.testing.assert_close(back.score(tok, st, m), sc.score(tok, st, m), atol=3e-3, rtol=0)  # fp16 weights
    (tmp_path / "scorer.safetensors").write_bytes(b"junk")
    with pytest.raises(BundleError, match="scorer"):
        Scorer.from_bundle(tmp_path)


def _bundle(tmp_path, candidates=3, with_scorer=True):
    from helpers import save_bundle
    from impact_rt.pipeline import Pipeline
    d = tmp_path / "bundle"
    save_bundle(Pipeline.random("test"), d, rerank={"candidates": candidates})
    if with_scorer:
        torch.manual_seed(1)
        Scorer(TINY).save(d)
    return d


def test_pipeline_keeps_the_best_candidate_and_it_is_that_seeds_clip(tmp_path):
    from impact_rt.pipeline import Pipeline
    pipe = Pipeline.from_pretrained(_bundle(tmp_path), backend="torch")
    assert pipe.candidates() == 3
    g = pipe.generate(["thunder", "a dog barking"], seed=5, iterations=2, diffusion_steps=3)
    assert g.audio.shape[0] == 2 and g.seeds == [5, 6] and g.settings["candidates"] == 3
    for i, (seed, j) in enumerate(zip(g.seeds, g.settings["chosen"])):
        cand = candidate_seeds([seed], 3)
        states, mask = pipe.conditioner.encode([g.prompts[i]] * 3)
        # every candidate alone (K = 1) and its score: the kept clip is the best-scored one
        alone = [pipe.generate([g.prompts[i]], seed=c, iterations=2, diffusion_steps=3, candidates=1,
                               progress=None) for c in cand]
        assert [a.settings.get("candidates") for a in alone] == [None] * 3
        np_audio = [a.audio[0] for a in alone]
        import numpy as np
        assert np.abs(np_audio[j] - g.audio[i]).max() < 1e-3
        assert any(np.abs(np_audio[o] - g.audio[i]).max() > 1e-2 for o in range(3) if o != j)


def test_candidates_keep_each_prompts_own_negative(tmp_path):
    """With K rows per prompt, prompt i's K rows are steered away from negative i (not a neighbour's)."""
    from impact_rt.pipeline import Pipeline
    import numpy as np
    pipe = Pipeline.from_pretrained(_bundle(tmp_path), backend="torch")
    prompts, negatives = ["thunder", "a dog barking"], ["speech", "music"]
    g = pipe.generate(prompts, seed=5, iterations=2, diffusion_steps=3, negative_prompt=negatives)
    assert g.settings["negative_prompts"] == negatives
    for i, (seed, j) in enumerate(zip(g.seeds, g.settings["chosen"])):
        alone = pipe.generate([prompts[i]], seed=candidate_seeds([seed], 3)[j], iterations=2, diffusion_steps=3,
                              candidates=1, negative_prompt=negatives[i])
        other = pipe.generate([prompts[i]], seed=candidate_seeds([seed], 3)[j], iterations=2, diffusion_steps=3,
                              candidates=1, negative_prompt=negatives[1 - i])
        assert np.abs(alone.audio[0] - g.audio[i]).max() < 1e-3
        assert np.abs(other.audio[0] - g.audio[i]).max() > 1e-2


def test_one_candidate_is_the_plain_seed(tmp_path):
    from impact_rt.pipeline import Pipeline
    import numpy as np
    pipe = Pipeline.from_pretrained(_bundle(tmp_path), backend="torch")
    a = pipe.generate(["rain"], seed=3, iterations=2, diffusion_steps=3, candidates=1)
    plain = Pipeline.random("test").generate(["rain"], seed=3, iterations=2, diffusion_steps=3)
    assert np.abs(a.audio - plain.audio).max() < 1e-5


def test_bad_candidate_counts_and_a_bundle_without_its_scorer(tmp_path):
    from impact_rt.pipeline import Pipeline
    pipe = Pipeline.from_pretrained(_bundle(tmp_path), backend="torch")
    for bad in (0, -1, 65, 2.5, True):
        with pytest.raises(ConfigError, match="candidates"):
            pipe.generate(["rain"], seed=0, iterations=1, diffusion_steps=1, candidates=bad)
    with pytest.raises(ConfigError, match="scorer"):
        Pipeline.random("test").generate(["rain"], seed=0, iterations=1, diffusion_steps=1, candidates=2)
    with pytest.raises(BundleError, match="no scorer"):
        Pipeline.from_pretrained(_bundle(tmp_path / "x", with_scorer=False), backend="torch")


def test_zero_shot_score_is_the_prompts_log_share_over_the_references(tmp_path):
    torch.manual_seed(0)
    sc = Scorer(TINY).eval()
    ref_states, ref_mask = torch.randn(5, 4, 16), torch.ones(5, 4, dtype=torch.bool)
    zs = sc.with_references(ref_states, ref_mask)
    assert zs.cfg.references == 5 and sc.cfg.references == 0
    tok, st, m = torch.randn(3, 256, 128), torch.randn(3, 4, 16), torch.ones(3, 4, dtype=torch.bool)
    with torch.no_grad():
        a, t, r = sc.embed_audio(tok), sc.embed_text(st, m), sc.embed_text(ref_states, ref_mask)
        logits = sc.log_scale.exp() * torch.cat([(a * t).sum(-1, keepdim=True), a @ r.T], dim=1)
        want = torch.log_softmax(logits, dim=1)[:, 0]
        got = zs.score(tok, st, m)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got < 0).all()
    zs.save(tmp_path)                                      # the references travel with the weights
    back = Scorer.from_bundle(tmp_path)
    assert back.cfg.references == 5
    torch.testing.assert_close(back.score(tok, st, m), got, atol=5e-2, rtol=0)
