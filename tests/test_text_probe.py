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


def _cli(argv):
    from training.text_probe import main
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_cli_bad_input_is_one_line_and_an_existing_out_needs_force(tmp_path, capsys):
    from training.checkpoint import prefixed, save_checkpoint
    m = _model()
    save_checkpoint(tmp_path / "ckpt", prefixed("ema", m.state_dict()), {"step": 1, "model": m.cfg.to_dict()})
    st = _store(4, torch.arange(4), torch.randn(4, 78, m.cfg.text_dim))
    st.save(tmp_path / "lat.safetensors")
    wide = _store(4, torch.arange(4), torch.randn(4, 78, m.cfg.text_dim + 8))
    wide.save(tmp_path / "wide.safetensors")
    uncaptioned = _store(2, torch.tensor([-1, -1]), torch.randn(1, 78, m.cfg.text_dim))
    uncaptioned.save(tmp_path / "none.safetensors")
    save_checkpoint(tmp_path / "other", {"scorer.w": torch.zeros(1)}, {"step": 1})
    (tmp_path / "old.json").write_text("an earlier probe")
    ok = ["--latents", str(tmp_path / "lat.safetensors"), "--model", str(tmp_path / "ckpt"), "--rows", "4",
          "--threads", "1"]
    cases = [(["--model", str(tmp_path / "nowhere")], "no checkpoint or bundle at"),         # exit 1 before
             (["--model", str(tmp_path / "other")], "is not a generator's"),                   # was a KeyError
             (["--latents", str(tmp_path / "x.safetensors")], "latent store not found"),      # was a traceback
             (["--latents", str(tmp_path / "wide.safetensors")], "holds text states [78, 24]"),  # a ConfigError
             (["--latents", str(tmp_path / "none.safetensors")], "no captioned training rows"),  # ZeroDivisionError
             (["--rows", "0"], "--rows must be at least 1"),
             (["--out", str(tmp_path / "old.json")], "exists (use --force"),                  # was overwritten
             (["--out", str(tmp_path / "no" / "p.json")], "does not exist")]                  # traceback at the end
    for more, words in cases:
        assert _cli(ok + more) == 2, more
        err = capsys.readouterr().err
        assert err.startswith("text_probe: error: ") and err.count("\n") == 1 and words in err, err
    assert (tmp_path / "old.json").read_text() == "an earlier probe"
    assert _cli(ok + ["--out", str(tmp_path / "old.json"), "--force"]) == 0
    assert '"rows": 4' in (tmp_path / "old.json").read_text()
