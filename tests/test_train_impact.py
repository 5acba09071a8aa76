import dataclasses
import torch

from training.latent_store import LatentStore
from training.train_impact import TrainConfig, Trainer, mask_ratio


def _store(tmp_path, n=6, text_dim=16, L=78):
    g = torch.Generator().manual_seed(0)
    st = LatentStore(latents=torch.randn(n, 8, 256, 16, generator=g).half(), clip=torch.arange(n),
                     caption_id=torch.tensor([0, 1, -1, 0, 1, -1][:n]), split=torch.zeros(n, dtype=torch.long),
                     text_states=torch.randn(2, L, text_dim, generator=g).half(),
                     text_mask=torch.ones(2, L, dtype=torch.bool), meta={"captions": ["a", "b"]})
    st.save(tmp_path / "lat.safetensors")
    return LatentStore.load(tmp_path / "lat.safetensors")


def test_store_round_trip_and_rows(tmp_path):
    st = _store(tmp_path)
    assert st.latents.shape == (6, 8, 256, 16) and st.text_dim == 16
    assert st.rows("uncond").tolist() == [0, 1, 2, 3, 4, 5]
    assert st.rows("text").tolist() == [0, 1, 3, 4]


def test_mask_ratio_in_range():
    g = torch.Generator().manual_seed(0)
    rs = [mask_ratio(0.7, g) for _ in range(200)]
    assert min(rs) >= 0.7 and max(rs) <= 1.0 and sum(rs) / 200 > 0.8


def test_mask_ratio_uniform_share_reaches_low_ratios():
    g = torch.Generator().manual_seed(0)
    rs = [mask_ratio(0.7, g, uniform=1.0) for _ in range(400)]
    assert 0.0 < min(rs) < 0.1 and max(rs) <= 1.0 and 0.4 < sum(rs) / 400 < 0.6
    g = torch.Generator().manual_seed(0)
    mixed = [mask_ratio(0.7, g, uniform=0.5) for _ in range(400)]
    low = sum(r < 0.7 for r in mixed) / 400
    assert 0.2 < low < 0.5                                  # ~0.5 × 0.7 of the draws fall below q
    # without the option no extra draw is made: the stream is the plain MAR one
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [mask_ratio(0.7, g1) for _ in range(20)] == [mask_ratio(0.7, g2, uniform=0.0) for _ in range(20)]


def test_masked_counts_come_in_buckets(tmp_path):
    from training.train_impact import bucketed
    assert bucketed(0.7, 256, 8) == 184 / 256 and bucketed(1.0, 256, 8) == 1.0 and bucketed(0.7, 256, 1) == 0.7
    assert bucketed(0.995, 250, 8) == 1.0                                  # capped at n
    assert bucketed(0.001, 256, 8) == 8 / 256                              # at least one bucket masked
    st = _store(tmp_path)
    cfg = TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, mask_bucket=4)
    n, seen = _ratios_seen(Trainer(cfg, st, tmp_path / "run"))
    assert all(round(r * n) % 4 == 0 or round(r * n) == n for r in seen) and all(r >= 0.7 for r in seen)
    n, seen = _ratios_seen(Trainer(dataclasses.replace(cfg, mask_ratio_uniform=1.0), st, tmp_path / "run-u"))
    assert all(round(r * n) % 4 == 0 or round(r * n) == n for r in seen) and min(seen) < 0.7


def _ratios_seen(tr, steps=6):
    """(tokens per clip, the mask ratio the model's loss got at each of ``steps`` training steps)."""
    seen, loss = [], tr.model.loss
    tr.model.loss = lambda *a, **k: seen.append(k["mask_ratio"]) or loss(*a, **k)
    for _ in range(steps):
        tr.train_step()
    return tr.model.cfg.num_tokens, seen


def test_checkpoint_resume_gives_same_next_step(tmp_path):
    st = _store(tmp_path)
    cfg = TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, warmup_steps=2)
    a = Trainer(cfg, st, tmp_path / "run")
    for _ in range(2):
        a.train_step()
    a.save()
    next_a = a.train_step()
    b = Trainer(cfg, st, tmp_path / "run")
    assert b.resume() and b.step == 2
    next_b = b.train_step()
    assert abs(next_a - next_b) < 1e-6
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k])


def test_resume_refuses_a_run_of_another_recipe(tmp_path, capsys):
    import dataclasses

    import pytest

    from training.train_impact import main
    st = _store(tmp_path)
    cfg = TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, warmup_steps=2)
    a = Trainer(cfg, st, tmp_path / "run")
    a.train_step()
    a.save()
    ok = Trainer(dataclasses.replace(cfg, lr=1e-5), st, tmp_path / "run")      # the lr may change
    assert ok.resume() and ok.step == 1
    other = Trainer(dataclasses.replace(cfg, caption_drop=0.3, batch_size=4), st, tmp_path / "run")
    with pytest.raises(ValueError, match=r"caption_drop \(0.1 in the checkpoint, 0.3 now\)") as e:
        other.resume()
    assert "batch_size (2 in the checkpoint, 4 now)" in str(e.value)
    st.meta["clip_ids"] = [f"c{i}" for i in range(6)]
    (tmp_path / "w.csv").write_text("id,weight\nc1,0\n")
    picked = Trainer(dataclasses.replace(cfg, clip_weights=str(tmp_path / "w.csv")), st, tmp_path / "run")
    with pytest.raises(ValueError, match="the --clip-weights selection"):
        picked.resume()
    wider = Trainer(dataclasses.replace(cfg, head_width=48, reinit="head"), st, tmp_path / "run")
    with pytest.raises(ValueError, match=r"the model \(head_width 32 in the checkpoint, 48 now\)"):
        wider.resume()
    st.save(tmp_path / "lat2.safetensors")
    capsys.readouterr()
    assert main(["--latents", str(tmp_path / "lat2.safetensors"), "--out", str(tmp_path / "run"), "--steps", "2",
                 "--phase", "text", "--preset", "test", "--batch-size", "4", "--no-bf16"]) == 2
    err = capsys.readouterr().err
    assert "holds a run trained with other options" in err and err.count("\n") == 1


def test_text_phase_training_lowers_loss_on_fixed_batch(tmp_path):
    st = _store(tmp_path)
    cfg = TrainConfig(phase="uncond", preset="test", batch_size=4, bf16=False, warmup_steps=1, lr=1e-3)
    tr = Trainer(cfg, st, tmp_path / "run2")
    torch.manual_seed(0)
    batch = tr.batch()

    def fixed():
        return tr.model.loss(batch[0], None, None, generator=torch.Generator().manual_seed(1)).item()

    before = fixed()
    for _ in range(3):
        tr.batch = lambda: batch
        tr.train_step()
    assert fixed() < before


def test_init_from_a_model_bundle_continues_its_generator(tmp_path):
    from impact_rt import bundle as B
    st = _store(tmp_path)
    cfg = TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, warmup_steps=2)
    a = Trainer(cfg, st, tmp_path / "run")
    a.train_step()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    B.save_generator(a.model, bundle, dtype=torch.float16)
    (bundle / "config.json").write_text("{}")
    b = Trainer(cfg, st, tmp_path / "run3")
    b.init_from(bundle)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v.half().float())


def test_ema_without_warmup_moves_at_the_decay_pace_from_the_first_step(tmp_path):
    st = _store(tmp_path)
    start = Trainer(TrainConfig(phase="text", preset="test", bf16=False), st, tmp_path / "r0").model.state_dict()
    moved = {}
    for warm in (True, False):
        cfg = TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, warmup_steps=1, lr=1e-2,
                          ema_decay=0.99, ema_warmup=warm)
        tr = Trainer(cfg, st, tmp_path / f"run{warm}")
        tr.model.load_state_dict(start)
        tr.ema = {k: v.float().clone() for k, v in start.items()}
        tr.train_step()
        raw = tr.model.state_dict()
        k = next(k for k, v in start.items() if v.is_floating_point() and not torch.equal(raw[k], v))
        # the share of the step the EMA took: warm-up d = 1/10 at step 0 (EMA ≈ raw weights), else 1 - 0.99
        moved[warm] = ((tr.ema[k] - start[k]).norm() / (raw[k] - start[k]).norm()).item()
    assert abs(moved[True] - 0.9) < 1e-3 and abs(moved[False] - 0.01) < 1e-3
    # the command line's --no-ema-warmup reaches the run's config (kept in its checkpoint for resumes)
    import json

    from training.train_impact import main
    for flag, want in (([], True), (["--no-ema-warmup"], False)):
        out = tmp_path / f"cli{want}"
        assert main(["--latents", str(tmp_path / "lat.safetensors"), "--out", str(out), "--steps", "1",
                     "--preset", "test", "--phase", "text", "--batch-size", "2", "--no-bf16", *flag]) == 0
        assert json.loads((out / "ckpt" / "state.json").read_text())["train"]["ema_warmup"] is want


def _manifest(tmp_path, cats, splits=None):
    import csv
    p = tmp_path / "manifest.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "file", "caption", "split", "category"])
        for i, c in enumerate(cats):
            w.writerow([f"c{i}", f"clips/{i}.flac", "x", (splits or ["train"] * len(cats))[i], c])
    return p


def test_category_balance_evens_out_big_categories(tmp_path):
    from training.train_impact import category_weights
    st = _store(tmp_path)
    # rows 0..5: four music clips, one dog, one scene of dog and rain; weights count^-1 (a=1)
    st.meta["manifest"] = str(_manifest(tmp_path, ["music", "music", "music", "music", "dog", "dog;rain"]))
    w = category_weights(st, st.rows("uncond"), 1.0)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.25, 0.25, 0.25, 0.5, (0.5 + 1.0) / 2], dtype=torch.double))
    cfg = TrainConfig(phase="uncond", preset="test", batch_size=4000, bf16=False, category_balance=1.0)
    picked = Trainer(cfg, st, tmp_path / "run").batch()  # draws follow the weights
    assert picked[0].shape[0] == 4000
    tr = Trainer(cfg, st, tmp_path / "run")
    idx = torch.multinomial(tr.row_weights, 4000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs((idx < 4).double().mean().item() - 1.0 / 2.25) < 0.03


def test_category_balance_refuses_a_manifest_that_no_longer_matches(tmp_path):
    import pytest

    from training.train_impact import category_weights
    st = _store(tmp_path)
    st.meta["manifest"] = str(_manifest(tmp_path, ["a"] * 7))  # a row added since: order no longer trusted
    with pytest.raises(ValueError, match="no longer matches"):
        category_weights(st, st.rows("uncond"), 0.5)
    st.meta["clip_ids"] = [f"c{i}" for i in (6, 5, 4, 3, 2, 1)]  # stores that record ids are matched by id
    assert st.clip_categories() == ["a"] * 6
    st.meta["clip_ids"][0] = "c99"
    with pytest.raises(ValueError, match="1 clip ids missing"):
        category_weights(st, st.rows("uncond"), 0.5)
    st.meta["manifest"] = str(tmp_path / "gone.csv")
    with pytest.raises(ValueError, match="not found"):
        category_weights(st, st.rows("uncond"), 0.5)


def _kind_manifest(tmp_path, kinds, cats=None, sources=None):
    import csv
    p = tmp_path / "kinds.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "file", "caption", "split", "category", "kind", "source_package"])
        for i, k in enumerate(kinds):
            w.writerow([f"c{i}", f"clips/{i}.flac", "x", "train", (cats or ["x"] * len(kinds))[i], k,
                        (sources or ["pkg"] * len(kinds))[i]])
    return p


def test_clip_weights_scale_the_rows_of_the_listed_clips(tmp_path, capsys):
    import pytest

    from training.train_impact import clip_factors, main
    st = _store(tmp_path)
    st.meta["clip_ids"] = [f"c{i}" for i in range(6)]
    rows = st.rows("text")                               # clips 0, 1, 3, 4
    (tmp_path / "w.csv").write_text("id,weight\nc1,0\nc4,2.5\nc2,0\n")
    torch.testing.assert_close(clip_factors(st, rows, str(tmp_path / "w.csv")),
                               torch.tensor([1, 0, 1, 2.5], dtype=torch.double))
    cfg = TrainConfig(phase="text", preset="test", batch_size=8, bf16=False, kind_weights="",
                      clip_weights=str(tmp_path / "w.csv"))
    st.save(tmp_path / "ids.safetensors")
    tr = Trainer(cfg, LatentStore.load(tmp_path / "ids.safetensors"), tmp_path / "run")
    torch.testing.assert_close(tr.row_weights, torch.tensor([1, 0, 1, 2.5], dtype=torch.double))
    import hashlib
    assert tr.state()[1]["clip_weights_sha256"] == hashlib.sha256((tmp_path / "w.csv").read_bytes()).hexdigest()
    for text, msg in [("id,weight\nc9,0\n", "1 ids are not clips of the store"),
                      ("id,w\nc1,0\n", "expected the columns id and weight"),
                      ("id,weight\nc1,-1\n", "line 2: expected an id and a weight >= 0"),
                      ("id,weight\nc1,nan\n", "line 2"),
                      ("id,weight\nc1,0\nc1,1\n", "line 3: clip 'c1' listed twice"),
                      ("id,weight\nc0,0\nc1,0\nc3,0\nc4,0\n", "every training row has weight 0")]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(ValueError, match=msg):
            clip_factors(st, rows, str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="cannot read"):
        clip_factors(st, rows, str(tmp_path / "none.csv"))
    (tmp_path / "bin.csv").write_bytes(b"id,weight\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        clip_factors(st, rows, str(tmp_path / "bin.csv"))
    # the digest is of the bytes parsed: a file read once, not re-read for its hash
    from training.train_impact import load_clip_weights
    want, digest = load_clip_weights(str(tmp_path / "w.csv"))
    assert want == {"c1": 0.0, "c4": 2.5, "c2": 0.0}
    assert digest == hashlib.sha256((tmp_path / "w.csv").read_bytes()).hexdigest()
    torch.testing.assert_close(clip_factors(st, rows, "never-read.csv", weights=want),
                               torch.tensor([1, 0, 1, 2.5], dtype=torch.double))
    del st.meta["clip_ids"]
    with pytest.raises(ValueError, match="manifest ids"):
        clip_factors(st, rows, str(tmp_path / "w.csv"))
    capsys.readouterr()
    (tmp_path / "bad.csv").write_text("id,weight\nc9,0\n")
    assert main(["--latents", str(tmp_path / "ids.safetensors"), "--out", str(tmp_path / "cli"), "--steps", "1",
                 "--preset", "test", "--clip-weights", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "not clips of the store" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--latents", "x", "--out", "y", "--steps", "1", "--clip-weights", str(tmp_path / "none.csv")])


def test_kind_weights_scale_the_row_weights(tmp_path, capsys):
    import pytest

    from training.train_impact import kind_weights, main, parse_kind_weights
    st = _store(tmp_path)
    st.meta["manifest"] = str(_kind_manifest(tmp_path, ["event", "scene", "event", "scene", "event", "speech"],
                                             ["dog", "dog", "dog", "dog", "music", "music"]))
    rows = st.rows("uncond")
    torch.testing.assert_close(kind_weights(st, rows, "event=0.25"),
                               torch.tensor([0.25, 1, 0.25, 1, 0.25, 1], dtype=torch.double))
    cfg = TrainConfig(phase="uncond", preset="test", batch_size=8, bf16=False, category_balance=1.0,
                      kind_weights="event=0.25, speech=0")
    tr = Trainer(cfg, st, tmp_path / "run")             # times the category balance: dog 1/4, music 1/2
    torch.testing.assert_close(tr.row_weights, torch.tensor([1 / 16, 1 / 4, 1 / 16, 1 / 4, 1 / 8, 0],
                                                            dtype=torch.double))
    assert parse_kind_weights("") == {} and parse_kind_weights("a=1,b=0.5") == {"a": 1.0, "b": 0.5}
    for bad in ("event", "event=x", "=1", "event=-1", "event=nan"):
        with pytest.raises(ValueError, match="kind=weight"):
            parse_kind_weights(bad)
    with pytest.raises(ValueError, match="no training row of kind 'evnt'"):
        kind_weights(st, rows, "evnt=0.5")
    with pytest.raises(ValueError, match="weight 0"):
        kind_weights(st, rows, "event=0,scene=0,speech=0")
    # the command line: a one-line error, exit code 2, before anything is trained
    st.save(tmp_path / "kinds.safetensors")
    capsys.readouterr()
    assert main(["--latents", str(tmp_path / "kinds.safetensors"), "--out", str(tmp_path / "cli"), "--steps", "1",
                 "--preset", "test", "--kind-weights", "evnt=0.5"]) == 2
    err = capsys.readouterr().err
    assert "no training row of kind 'evnt'" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--latents", "x", "--out", "y", "--steps", "1", "--kind-weights", "event"])


def test_category_weights_scale_every_clip_where_the_category_is_heard(tmp_path, capsys):
    import pytest

    from training.train_impact import category_factors, main
    st = _store(tmp_path)
    st.meta["manifest"] = str(_kind_manifest(tmp_path, ["event", "scene", "event", "scene", "crop", "speech"],
                                             ["thunder", "rain;thunder", "dog", "dog;rain", "rain", "speech"]))
    rows = st.rows("uncond")
    # a scene's factor is the product over its categories; unnamed categories count 1
    torch.testing.assert_close(category_factors(st, rows, "thunder=3,rain=0.5"),
                               torch.tensor([3, 1.5, 1, 0.5, 0.5, 1], dtype=torch.double))
    cfg = TrainConfig(phase="uncond", preset="test", batch_size=8, bf16=False, kind_weights="speech=0",
                      category_weights="thunder=3")
    tr = Trainer(cfg, st, tmp_path / "run")             # times the kind weights
    torch.testing.assert_close(tr.row_weights, torch.tensor([3, 3, 1, 1, 1, 0], dtype=torch.double))
    with pytest.raises(ValueError, match="no training row of category 'thundr'"):
        category_factors(st, rows, "thundr=2")
    with pytest.raises(ValueError, match="category=weight"):
        category_factors(st, rows, "thunder=-1")
    with pytest.raises(ValueError, match="weight 0"):      # kinds and categories together leave nothing
        Trainer(TrainConfig(phase="uncond", preset="test", batch_size=8, bf16=False, kind_weights="speech=0",
                            category_weights="thunder=0,dog=0,rain=0"), st, tmp_path / "run2")
    st.save(tmp_path / "cats.safetensors")
    capsys.readouterr()
    assert main(["--latents", str(tmp_path / "cats.safetensors"), "--out", str(tmp_path / "cli"), "--steps", "1",
                 "--preset", "test", "--category-weights", "thundr=2"]) == 2
    err = capsys.readouterr().err
    assert "no training row of category 'thundr'" in err and err.count("\n") == 1


def test_source_weights_scale_every_clip_with_a_sound_of_the_package(tmp_path, capsys):
    import pytest

    from training.train_impact import main, source_factors
    st = _store(tmp_path)
    st.meta["manifest"] = str(_kind_manifest(
        tmp_path, ["event", "scene", "event", "scene", "crop", "speech"],
        ["thunder", "rain;thunder", "thunder", "dog;rain", "rain", "speech"],
        ["stk", "bed;sc3d", "sc3d", "bed;stk", "bed", "tts"]))
    rows = st.rows("uncond")
    torch.testing.assert_close(source_factors(st, rows, "sc3d=0,bed=2"),
                               torch.tensor([1, 0, 0, 2, 2, 1], dtype=torch.double))
    cfg = TrainConfig(phase="uncond", preset="test", batch_size=8, bf16=False, category_weights="thunder=3",
                      source_weights="sc3d=0")
    tr = Trainer(cfg, st, tmp_path / "run")             # times the category weights
    torch.testing.assert_close(tr.row_weights, torch.tensor([3, 0, 0, 1, 1, 1], dtype=torch.double))
    with pytest.raises(ValueError, match="no training row from package 'sc3'"):
        source_factors(st, rows, "sc3=0")
    with pytest.raises(ValueError, match="weight 0"):
        source_factors(st, rows, "stk=0,bed=0,sc3d=0,tts=0")
    st.save(tmp_path / "src.safetensors")
    capsys.readouterr()
    assert main(["--latents", str(tmp_path / "src.safetensors"), "--out", str(tmp_path / "cli"), "--steps", "1",
                 "--preset", "test", "--source-weights", "sc3=0"]) == 2
    err = capsys.readouterr().err
    assert "no training row from package 'sc3'" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--latents", "x", "--out", "y", "--steps", "1", "--source-weights", "sc3d"])


def test_trainable_trains_only_the_named_parameters(tmp_path):
    import pytest

    st = _store(tmp_path)
    cfg = TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, warmup_steps=1, trainable="text_proj")
    tr = Trainer(cfg, st, tmp_path / "run")
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    for _ in range(2):
        tr.train_step()
    after = tr.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert "text_proj.weight" in moved and moved <= {"text_proj.weight", "text_proj.bias"}
    tr2 = Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, warmup_steps=1), st,
                  tmp_path / "run2")
    tr2.train_step()
    assert any(not torch.equal(v, tr2.model.state_dict()[k]) for k, v in before.items() if k.startswith("encoder."))
    with pytest.raises(ValueError, match="no parameter under 'text_projection'"):
        Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, trainable="text_projection"),
                st, tmp_path / "run3")


def test_trainable_on_the_command_line(tmp_path, capsys):
    from training.train_impact import main
    st = _store(tmp_path)
    args = ["--latents", str(tmp_path / "lat.safetensors"), "--phase", "text", "--preset", "test", "--steps", "1",
            "--batch-size", "2", "--precision", "fp32", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "a"), "--trainable", "text_projection"]) == 2
    assert "no parameter under 'text_projection'" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "b"), "--trainable", "text_proj,null_condition"]) == 0
    del st


def _trained_bundle(tmp_path, st):
    """A test-preset trainer with trained-like weights (nothing zero), saved as a bundle's generator."""
    from impact_rt import bundle as B
    a = Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, warmup_steps=2), st,
                tmp_path / "run")
    for p in a.model.parameters():
        p.data.normal_(0, 0.2)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    B.save_generator(a.model, bundle, dtype=torch.float32)
    (bundle / "config.json").write_text("{}")
    return a, bundle


def test_init_can_grow_the_head_or_start_it_fresh(tmp_path, capsys):
    import pytest

    from training.train_impact import main, reinit_state
    st = _store(tmp_path)
    a, bundle = _trained_bundle(tmp_path, st)
    w = a.model.cfg.head_width
    grown = Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, head_width=2 * w,
                                grow="head", trainable="head"), st, tmp_path / "g")
    grown.init_from(bundle)
    assert grown.model.cfg.head_width == 2 * w
    x, c, t = torch.randn(3, a.model.cfg.token_dim), torch.randn(3, a.model.cfg.dim), torch.tensor([1, 500, 999])
    with torch.no_grad():
        torch.testing.assert_close(grown.model.head(x, t, c), a.model.head(x, t, c), rtol=1e-4, atol=1e-4)
    before = {k: v.clone() for k, v in grown.model.state_dict().items()}
    grown.train_step()
    moved = {k.split(".")[0] for k, v in grown.model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"head"}
    fresh = Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, head_width=2 * w,
                                reinit="head"), st, tmp_path / "f")
    fresh.init_from(bundle)
    for k, v in a.model.state_dict().items():       # everything but the head is the bundle's
        if not k.startswith("head."):
            assert torch.equal(fresh.model.state_dict()[k], v)
    assert not fresh.model.head.final_layer.linear.weight.any()       # the fresh head's zero output layer
    # a wider head without --grow or --reinit: one line naming the tensor
    args = ["--latents", str(tmp_path / "lat.safetensors"), "--phase", "text", "--preset", "test", "--steps", "1",
            "--batch-size", "2", "--precision", "fp32", "--threads", "1", "--init", str(bundle)]
    assert main(args + ["--out", str(tmp_path / "m"), "--head-width", str(2 * w)]) == 2
    assert "has shape" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "n"), "--head-width", str(2 * w), "--reinit", "heads"]) == 2
    assert "no parameter under 'heads'" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "o"), "--head-width", str(2 * w), "--grow", "head"]) == 0
    with pytest.raises(ValueError, match=f"already {w} wide"):
        Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, grow="head"),
                st, tmp_path / "q").init_from(bundle)
    with pytest.raises(ValueError, match="not a tensor of this model"):
        reinit_state(a.model, {**a.model.state_dict(), "head.extra": torch.zeros(1)}, "")
    with pytest.raises(ValueError, match="is not head, encoder or head,encoder"):
        Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, grow="decoder"),
                st, tmp_path / "p").init_from(bundle)
    with pytest.raises(ValueError, match="already has 1\\+1 blocks"):
        Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, grow="encoder"),
                st, tmp_path / "p2").init_from(bundle)


def test_init_can_deepen_the_encoder(tmp_path, capsys):
    from training.train_impact import main
    st = _store(tmp_path)
    a, bundle = _trained_bundle(tmp_path, st)
    deep = Trainer(TrainConfig(phase="text", preset="test", batch_size=2, bf16=False, enc_depth=2, dec_depth=3,
                               grow="encoder"), st, tmp_path / "d")
    deep.init_from(bundle)
    assert (len(deep.model.encoder.encoder_blocks), len(deep.model.encoder.decoder_blocks)) == (2, 3)
    mc = a.model.cfg
    b, n = 2, mc.num_tokens
    tokens, cond = torch.randn(b, n, mc.token_dim), torch.randn(b, mc.text_len, mc.dim)
    cmask = torch.ones(b, mc.text_len, dtype=torch.bool)
    order = torch.stack([torch.randperm(n) for _ in range(b)])
    with torch.no_grad():
        torch.testing.assert_close(deep.model.encoder(tokens, cond, cmask, order[:, 3:], order[:, :3]),
                                   a.model.encoder(tokens, cond, cmask, order[:, 3:], order[:, :3]))
    before = {k: v.clone() for k, v in deep.model.state_dict().items()}
    deep.train_step()
    assert not torch.equal(deep.model.encoder.decoder_blocks[1].mlp.fc2.weight, before["encoder.decoder_blocks.1.mlp.fc2.weight"])
    args = ["--latents", str(tmp_path / "lat.safetensors"), "--phase", "text", "--preset", "test", "--steps", "1",
            "--batch-size", "2", "--precision", "fp32", "--threads", "1", "--init", str(bundle)]
    assert main(args + ["--out", str(tmp_path / "o"), "--enc-depth", "2", "--grow", "encoder"]) == 0
    assert main(args + ["--out", str(tmp_path / "o2"), "--enc-depth", "2"]) == 2     # deeper without --grow
    assert "missing from the weights to start from (deepen it with --grow encoder)" in capsys.readouterr().err
