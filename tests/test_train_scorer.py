import csv

import torch

from impact_rt.rerank import Scorer, ScorerConfig
from training.latent_store import LatentStore
from training.train_scorer import ScorerTrainConfig, ScorerTrainer, contrastive_loss, main, positives

TINY = ScorerConfig(text_dim=16, dim=32, depth=1, heads=2, embed=16)


def _store(tmp_path, per=6):
    """Two categories whose latents differ in sign; 2 captions each; train and val rows."""
    g = torch.Generator().manual_seed(0)
    n = 4 * per
    cats = ["thunder", "dog"] * (n // 2)
    sign = torch.tensor([1.0 if c == "thunder" else -1.0 for c in cats])
    lat = torch.randn(n, 8, 256, 16, generator=g) * 0.5 + sign[:, None, None, None]
    man = tmp_path / "manifest.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "file", "caption", "category", "split"])
        for i, c in enumerate(cats):
            w.writerow([f"c{i}", f"{i}.flac", c, c, "train" if i < n - 4 else "val"])
    text = torch.randn(4, 5, 16, generator=g)
    st = LatentStore(latents=lat.half(), clip=torch.arange(n),
                     caption_id=torch.tensor([(i % 2) + 2 * ((i // 2) % 2) for i in range(n)]),
                     split=torch.tensor([0] * (n - 4) + [1] * 4), text_states=text.half(),
                     text_mask=torch.ones(4, 5, dtype=torch.bool),
                     meta={"manifest": str(man), "clip_ids": [f"c{i}" for i in range(n)]})
    st.save(tmp_path / "lat.safetensors")
    return LatentStore.load(tmp_path / "lat.safetensors")


def test_positives_share_a_category_and_the_loss_prefers_matched_pairs():
    pos = positives(torch.tensor([0, 1, 0]))
    assert pos.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    e = torch.eye(3)[:, :2].clone()
    e[2] = e[0]
    a = torch.nn.functional.normalize(e + 1e-3, dim=-1)
    ls = torch.tensor(3.0)
    good = contrastive_loss(a, a, pos, ls)
    bad = contrastive_loss(a, a[[1, 0, 1]], pos, ls)        # every text of the other category
    assert good < bad


def test_training_lowers_the_loss_and_separates_categories(tmp_path):
    st = _store(tmp_path)
    tr = ScorerTrainer(ScorerTrainConfig(batch_size=8, lr=2e-3, warmup_steps=1, total_steps=40, noise_max=0.2),
                       st, tmp_path / "run", TINY)
    torch.manual_seed(0)
    first = [tr.train_step() for _ in range(3)]
    for _ in range(30):
        last = tr.train_step()
    assert last < min(first)
    v = tr.validate()
    assert v["categories"] == 2 and v["clips"] == 4 and v["top1"] == 1.0


def test_checkpoint_resume_gives_same_next_step_and_exports(tmp_path):
    st = _store(tmp_path)
    cfg = ScorerTrainConfig(batch_size=8, warmup_steps=2)
    a = ScorerTrainer(cfg, st, tmp_path / "run", TINY)
    for _ in range(2):
        a.train_step()
    a.save()
    next_a = a.train_step()
    b = ScorerTrainer(cfg, st, tmp_path / "run", TINY)
    assert b.resume() and b.step == 2
    assert abs(b.train_step() - next_a) < 1e-5
    b.scorer.save(tmp_path / "bundle")
    assert isinstance(Scorer.from_bundle(tmp_path / "bundle"), Scorer)


def test_cli_needs_a_stop_and_a_checkpoint_to_export(tmp_path, capsys):
    st = _store(tmp_path)
    import pytest
    with pytest.raises(SystemExit):
        main(["--latents", st.path, "--out", str(tmp_path / "r")])
    assert main(["--latents", st.path, "--out", str(tmp_path / "r"), "--export", str(tmp_path / "b")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_export_writes_the_scorer_with_the_training_captions_and_the_candidates(tmp_path):
    from helpers import save_bundle
    from impact_rt import bundle as B
    from impact_rt.pipeline import Pipeline
    st = _store(tmp_path)
    tr = ScorerTrainer(ScorerTrainConfig(batch_size=8), st, tmp_path / "run")
    tr.train_step()
    tr.save()
    d = save_bundle(Pipeline.random("test"), tmp_path / "bundle")
    assert main(["--latents", st.path, "--out", str(tmp_path / "run"), "--export", str(d), "--candidates", "4"]) == 0
    sc = Scorer.from_bundle(d)
    assert sc.cfg.references == 4                          # the 4 captions of the train rows
    assert B.read_config(d).candidates == 4
    assert Pipeline.from_pretrained(d, backend="torch").candidates() == 4
