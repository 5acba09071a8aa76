"""Short label captions: which clips get which, their store rows, and the trainer's use of them."""
import csv

import pytest
import torch

from training.data.captions import tag_captions
from training.latent_store import LatentStore
from training.tag_captions import add_tag_captions
from training.train_impact import TrainConfig, Trainer


def test_tag_captions_name_the_salient_event_or_the_bed():
    assert tag_captions("thunder") == ("thunder", "thunder rumbling")
    assert tag_captions("rain;thunder") == ("thunder", "thunder rumbling")     # the bed goes unnamed
    assert tag_captions("dog;wind") == ("a dog", "a dog barking")
    assert tag_captions("footsteps") == ("footsteps",)                         # label and phrase agree
    assert tag_captions("cow;dog;rain") == ("a cow and a dog",)
    assert tag_captions("rain") == ("rain", "rain falling")
    for none in ("", "gm_piano", "tts_male", "speech_tuxpaint", "rain;wind", "cow;dog;owl;rain"):
        assert tag_captions(none) == (), none


def test_tag_captions_skip_clips_whose_subject_is_no_label():
    from training.data.captions import BY_NAME, VAGUE_SUBJECTS
    vague = [c.name for c in BY_NAME.values() if c.subject in VAGUE_SUBJECTS]
    assert vague, "the table has events with a vague subject ('something splashing')"
    assert tag_captions(vague[0]) == () and tag_captions(f"{vague[0]};thunder") == ()


def _tiny_store(tmp_path):
    cats = ["rain;thunder", "thunder", "gm_piano", "dog", "rain"]
    man = tmp_path / "manifest.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "file", "caption", "split", "category"])
        for i, c in enumerate(cats):
            w.writerow([f"c{i}", f"clips/{i}.flac", "x", "train", c])
    g = torch.Generator().manual_seed(0)
    # rows: clips 0..4, clip 4 uncaptioned; captions "thunder" (an existing one) and two others
    return LatentStore(latents=torch.randn(5, 8, 256, 16, generator=g).half(), clip=torch.arange(5),
                       caption_id=torch.tensor([0, 1, 2, 0, -1]), split=torch.zeros(5, dtype=torch.long),
                       text_states=torch.randn(3, 78, 16, generator=g).half(),
                       text_mask=torch.ones(3, 78, dtype=torch.bool),
                       meta={"captions": ["thunder rumbles while rain falls", "thunder", "a piano playing"],
                             "manifest": str(man), "clip_ids": [f"c{i}" for i in range(5)]})


def _encode(texts):
    """A stand-in conditioner: each text's state is its length, so rows can be told apart."""
    s = torch.stack([torch.full((78, 16), float(len(t))) for t in texts])
    return s, torch.ones(len(texts), 78, dtype=torch.bool)


def test_add_tag_captions_appends_new_captions_and_reuses_existing_ones(tmp_path):
    st = _tiny_store(tmp_path)
    out = add_tag_captions(st, _encode)
    caps = out.meta["captions"]
    assert caps[:3] == st.meta["captions"] and out.meta["tag_captions"] == 3
    assert sorted(caps[3:]) == ["a dog", "a dog barking", "thunder rumbling"]
    ids = out.tag_caption_id.tolist()
    assert [caps[i] for i in ids[0]] == ["thunder", "thunder rumbling"] and ids[0][0] == 1  # reused
    assert ids[1] == ids[0]
    assert ids[2] == [-1, -1]                      # music: none
    assert [caps[i] for i in ids[3]] == ["a dog", "a dog barking"]
    assert ids[4] == [-1, -1]                      # uncaptioned rows stay out of the text phase
    assert torch.equal(out.text_states[:3], st.text_states)
    for i in range(3, 6):
        assert float(out.text_states[i, 0, 0]) == len(caps[i])
    out.save(tmp_path / "tags.safetensors")
    back = LatentStore.load(tmp_path / "tags.safetensors")
    assert torch.equal(back.tag_caption_id, out.tag_caption_id) and back.meta["captions"] == caps
    assert LatentStore.load(tmp_path / "tags.safetensors").rows("text").tolist() == [0, 1, 2, 3]


def _caption_rows_seen(tr, steps=40):
    """Which text_states rows the trainer's batches used (the stand-in states are constant per row)."""
    seen = []
    for _ in range(steps):
        _, states, _, _ = tr.batch()
        seen += states[:, 0, 0].tolist()
    return seen


def test_the_trainer_uses_label_captions_at_the_given_share_and_only_then(tmp_path):
    st = add_tag_captions(_tiny_store(tmp_path), _encode)
    st.text_states[:3] = torch.tensor([100.0, 101.0, 102.0])[:, None, None].half()  # full captions
    cfg = TrainConfig(phase="text", preset="test", batch_size=64, bf16=False)
    plain = Trainer(cfg, st, tmp_path / "a")
    assert set(_caption_rows_seen(plain)) == {100.0, 101.0, 102.0}
    no_tags = Trainer(cfg, LatentStore(**{**st.__dict__, "tag_caption_id": None}), tmp_path / "b")
    assert _caption_rows_seen(no_tags) == _caption_rows_seen(Trainer(cfg, st, tmp_path / "c"))  # same stream
    tagged = Trainer(TrainConfig(**{**cfg.__dict__, "tag_caption_prob": 0.5}), st, tmp_path / "d")
    seen = torch.tensor(_caption_rows_seen(tagged))
    # rows 0, 1, 3 of the 4 have labels, each taken half the time, one of two forms at random; "thunder" is
    # the store's own row 1 (state 101), so rows 0 and 1 show a new state a quarter of the time, row 3
    # half: 0.25 of the 2,560 draws expected (std 0.009)
    short = (seen < 100).double().mean().item()
    assert 0.2 < short < 0.3
    assert set(seen[seen < 100].tolist()) == {float(len(c)) for c in ("thunder rumbling", "a dog", "a dog barking")}
    full = seen[seen >= 100]                       # row 0 with "thunder" (row 1) and row 1's own caption: 101
    # rows 0 and 3 (caption row 0) untagged half the time
    assert abs((full == 100).double().mean().item() - 0.25 / 0.75) < 0.05
    assert 102.0 in full.tolist()                  # the music row keeps its caption


def test_the_trainer_refuses_label_captions_it_cannot_use(tmp_path):
    st = _tiny_store(tmp_path)
    with pytest.raises(ValueError, match="training.tag_captions"):
        Trainer(TrainConfig(phase="text", preset="test", bf16=False, tag_caption_prob=0.5), st, tmp_path / "a")
    tagged = add_tag_captions(st, _encode)
    for cfg in (TrainConfig(phase="uncond", preset="test", bf16=False, tag_caption_prob=0.5),
                TrainConfig(phase="text", preset="test", bf16=False, tag_caption_prob=1.5)):
        with pytest.raises(ValueError, match="tag-caption-prob"):
            Trainer(cfg, tagged, tmp_path / "b")


def test_tag_captions_cli_refuses_to_overwrite_its_input(tmp_path, capsys):
    from training.tag_captions import main
    assert main(["--latents", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "must differ" in capsys.readouterr().err


def test_tag_captions_cli_refuses_an_existing_out_and_a_bad_store_in_one_line(tmp_path, capsys):
    from training.tag_captions import main
    (tmp_path / "done.safetensors").write_bytes(b"an earlier tagged store")
    (tmp_path / "bad.safetensors").write_bytes(b"not a store")
    for argv, words in ((["--latents", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "done.safetensors")],
                         "exists (use --force"),                  # was overwritten
                        (["--latents", str(tmp_path / "x.safetensors"), "--out", str(tmp_path)], "is a folder"),
                        (["--latents", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "no" / "o.safetensors")],
                         "does not exist"),
                        (["--latents", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "o.safetensors")],
                         "latent store not found"),               # was a traceback
                        (["--latents", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "o.safetensors")],
                         "not a readable safetensors file")):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("tag_captions: error: ") and err.count("\n") == 1 and words in err, err
    assert (tmp_path / "done.safetensors").read_bytes() == b"an earlier tagged store"
    assert not (tmp_path / "o.safetensors").exists()
