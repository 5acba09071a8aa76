import csv
import json

import pytest
import torch

from training.latent_store import LatentStore
from training.pack_store import (RowCodes, compress_row, decompress_rows, main, pack, packed_clips, select_rows,
                                 unpack)


def _store(tmp_path, n=12, caps=4, L=10, dim=8):
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(n, 8, 16, 4, generator=g) * torch.linspace(0.3, 1.6, 8)[None, :, None, None]
    lat[0, 3, 0, 0], lat[1, 5, 2, 1] = 25.0, -30.0       # the heavy tails of real latents
    mask = torch.zeros(caps, L, dtype=torch.bool)
    for c in range(caps):
        mask[c, : 3 + c] = True
    states = torch.randn(caps, L, dim, generator=g) * mask[..., None]
    caption = torch.tensor([i % caps if i % 5 else -1 for i in range(n)])
    cats = ["music"] * 6 + ["dog", "dog;rain", "thunder", "music", "rain", "bird"]
    man = tmp_path / "manifest.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "file", "caption", "split", "category", "kind"])
        for i, c in enumerate(cats[:n]):
            w.writerow([f"id{i}", f"{i}.flac", "x", "train", c, "scene" if ";" in c else "event"])
    st = LatentStore(lat.half(), torch.arange(n), caption, torch.zeros(n, dtype=torch.long), states.half(), mask,
                     {"manifest": str(man), "clip_ids": [f"id{i}" for i in range(n)], "scale_factor": 0.3})
    st.save(tmp_path / "lat.safetensors")
    return LatentStore.load(tmp_path / "lat.safetensors")


@pytest.mark.parametrize("compress", [True, False], ids=["lzma", "plain"])
def test_pack_unpack_round_trip(tmp_path, compress):
    st = _store(tmp_path)
    rows = st.rows("text")
    info = pack(st, rows, tmp_path / "a.pack", compress=compress)
    assert info["rows"] == len(rows) and info["latent_rel_rms_error"] < 0.02
    out = unpack([tmp_path / "a.pack"], tmp_path / "u.safetensors")
    back = LatentStore.load(tmp_path / "u.safetensors")
    assert len(back.clip) == len(rows) and back.rows("text").tolist() == list(range(len(rows)))
    orig = st.latents[rows].float()
    err = back.latents.float() - orig
    assert err.pow(2).mean().sqrt() < 0.02 * orig.std()
    assert err.abs().max() < 0.05 * orig.abs().max()       # tails kept to a few % of their size
    assert back.meta["scale_factor"] == 0.3 and out.meta["packs"]
    cats_orig, cats_back = st.clip_categories(), back.clip_categories()
    for i, r in enumerate(rows.tolist()):
        c0, c1 = int(st.caption_id[r]), int(back.caption_id[i])
        assert torch.equal(st.text_mask[c0], back.text_mask[c1])
        torch.testing.assert_close(back.text_states[c1].float(), st.text_states[c0].float(), atol=0.02, rtol=0.02)
        assert cats_back[int(back.clip[i])] == cats_orig[int(st.clip[r])]
        assert back.clip_kinds()[int(back.clip[i])] == st.clip_kinds()[int(st.clip[r])]
    assert (back.text_states.float()[~back.text_mask] == 0).all()


def test_a_clips_variants_unpack_and_two_packs_of_one_clip_are_refused(tmp_path):
    """training.latents stores each clip's augmented variants as rows of the same clip: one pack
    holding them unpacks (it used to be refused as 'packs overlap'); two packs sharing a clip do not."""
    st = _store(tmp_path)
    st.clip = torch.arange(len(st.clip)) // 2                  # clips 0..5, two variants each
    st.save(tmp_path / "var.safetensors")
    st = LatentStore.load(tmp_path / "var.safetensors")
    rows = st.rows("text")
    pack(st, rows, tmp_path / "a.pack")
    unpack([tmp_path / "a.pack"], tmp_path / "u.safetensors")
    back = LatentStore.load(tmp_path / "u.safetensors")
    assert len(back.clip) == len(rows) and len(back.clip.unique()) == len(st.clip[rows].unique())
    assert back.clip.tolist() == torch.unique(st.clip[rows], return_inverse=True)[1].tolist()
    pack(st, rows[:3], tmp_path / "b.pack")
    with pytest.raises(ValueError, match="packs overlap"):
        unpack([tmp_path / "a.pack", tmp_path / "b.pack"], tmp_path / "v.safetensors")


def test_label_captions_travel_in_packs(tmp_path):
    st = _store(tmp_path)
    # caption 3 doubles as a label of rows 1 and 2; caption 4 (new) is the other label of row 2 only
    g = torch.Generator().manual_seed(1)
    st.text_states = torch.cat([st.text_states, (torch.randn(1, 10, 8, generator=g) * st.text_mask[:1, :, None]).half()])
    st.text_mask = torch.cat([st.text_mask, st.text_mask[:1]])
    st.tag_caption_id = torch.full((12, 2), -1, dtype=torch.long)
    st.tag_caption_id[1] = torch.tensor([3, 3])
    st.tag_caption_id[2] = torch.tensor([3, 4])
    rows = torch.tensor([1, 2, 6, 7])          # captions 1, 2, 2, 3: the labels bring caption 4
    pack(st, rows, tmp_path / "a.pack")
    pack(st, st.rows("text")[~torch.isin(st.rows("text"), rows)][:3], tmp_path / "b.pack")   # without labels' rows
    back = unpack([tmp_path / "a.pack", tmp_path / "b.pack"], tmp_path / "u.safetensors")
    back = LatentStore.load(tmp_path / "u.safetensors")
    assert back.tag_caption_id.shape == (7, 2)
    order = {int(back.meta["clip_ids"][c][1:]): i for i, c in enumerate(back.clip.tolist())}   # store row → unpacked
    for r in rows.tolist():
        want, got = st.tag_caption_id[r], back.tag_caption_id[order[r]]
        assert ((want >= 0) == (got >= 0)).all()
        for w, h in zip(want.tolist(), got.tolist()):
            if w >= 0:
                torch.testing.assert_close(back.text_states[h].float(), st.text_states[w].float(), atol=0.02, rtol=0.02)
    assert all((back.tag_caption_id[order[r]] == -1).all() for r in order if r not in rows.tolist())
    tagless = unpack([tmp_path / "b.pack"], tmp_path / "v.safetensors")
    assert tagless.tag_caption_id is None
    # the budget counts the labels' text states too: what fits every row without them no longer does
    tags, st.tag_caption_id = st.tag_caption_id, None
    budget = next(b for b in range(0, 10**7, 16) if len(select_rows(st, b)) == len(st.rows("text")))
    st.tag_caption_id = tags
    assert len(select_rows(st, budget)) < len(st.rows("text")) <= len(select_rows(st, budget + 4096))


def test_select_rows_keeps_to_the_budget_and_excludes_packed_clips(tmp_path):
    st = _store(tmp_path)
    per_row = st.latents[0].numel()
    rows = select_rows(st, 4 * per_row + 4 * (8 * 10 + 10 + 10), balance=0.5)
    assert 3 <= len(rows) <= 4 and set(rows.tolist()) <= set(st.rows("text").tolist())
    pack(st, rows, tmp_path / "a.pack", compress=False)
    rest = select_rows(st, 10 ** 9, exclude=packed_clips(tmp_path / "a.pack"))
    assert not set(rest.tolist()) & set(rows.tolist())
    assert len(rest) + len(rows) == len(st.rows("text"))
    pack(st, rest, tmp_path / "b.pack")
    both = unpack([tmp_path / "a.pack", tmp_path / "b.pack"], tmp_path / "ab.safetensors")
    assert len(both.clip) == len(st.rows("text"))
    with pytest.raises(ValueError, match="overlap"):
        unpack([tmp_path / "a.pack", tmp_path / "a.pack"], tmp_path / "aa.safetensors")


def test_balance_favours_rare_categories(tmp_path):
    st = _store(tmp_path)
    per_row = st.latents[0].numel()
    hits = 0
    for seed in range(20):      # one row's budget: music holds 5 of the 9 captioned rows
        rows = select_rows(st, per_row + 200, balance=1.0, seed=seed)
        hits += st.clip_categories()[int(st.clip[rows[0]])] != "music"
    assert hits >= 12


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    st = _store(tmp_path)
    (tmp_path / "x.pack").write_bytes(b"not a pack")
    assert main(["unpack", "--out", str(tmp_path / "o.safetensors"), str(tmp_path / "x.pack")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pack_store:") and "\n" not in err
    assert main(["pack", "--latents", st.path, "--out", str(tmp_path / "p.pack"), "--exclude", str(tmp_path / "x.pack")]) == 2
    assert "not a latent pack" in capsys.readouterr().err
    assert main(["pack", "--latents", st.path, "--out", str(tmp_path / "p.pack"), "--max-mb", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == len(st.rows("text"))


def test_compressed_rows_round_trip_exactly_and_shrink_silence():
    g = torch.Generator().manual_seed(1)
    noisy = torch.randint(0, 256, (8, 64, 16), dtype=torch.uint8, generator=g)
    quiet = noisy.clone()
    quiet[:, 16:] = 128                           # three quarters of the frames one level: padding
    blobs = [compress_row(noisy), compress_row(quiet)]
    back = decompress_rows(torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8),
                           torch.tensor([len(b) for b in blobs]), (8, 64, 16))
    assert torch.equal(back[0], noisy) and torch.equal(back[1], quiet)
    assert len(blobs[1]) < 0.4 * len(blobs[0])
    with pytest.raises(ValueError, match="corrupt"):
        decompress_rows(torch.frombuffer(bytearray(blobs[1]), dtype=torch.uint8), torch.tensor([len(blobs[1])]),
                        (8, 64, 8))


def test_compressed_budget_counts_compressed_bytes(tmp_path):
    st = _store(tmp_path)
    st.latents[:, :, 4:] = 0                      # mostly constant rows compress well
    rc = RowCodes(st, compress=True)
    text_rows = st.rows("text")
    assert all(rc.cost(int(r)) < 0.5 * st.latents[0].numel() for r in text_rows)
    budget = 3 * st.latents[0].numel()            # three plain rows' worth
    plain = select_rows(st, budget, balance=0.0)
    packed = select_rows(st, budget, balance=0.0, row_codes=rc)
    assert len(packed) > len(plain)
    pack(st, packed, tmp_path / "c.pack", row_codes=rc)
    from safetensors.torch import load_file
    t = load_file(str(tmp_path / "c.pack"))
    assert t["codes_lzma"].numel() + 8 * len(packed) <= budget and "codes" not in t
    back = unpack([tmp_path / "c.pack"], tmp_path / "c.safetensors")
    assert len(back.clip) == len(packed)


def test_first_categories_are_packed_before_the_drawn_rest(tmp_path):
    st = _store(tmp_path)
    per_row = st.latents[0].numel()
    cats = st.clip_categories()
    rare = next(c for c in (cats[int(st.clip[r])] for r in st.rows("text")) if c != "music")
    def has(r):                 # a scene ("dog;rain") counts for each of its categories
        return rare in cats[int(st.clip[r])].split(";")
    n_rare = sum(has(r) for r in st.rows("text"))
    assert n_rare >= 2
    for seed in range(5):       # a budget of n_rare rows: with first= they are exactly the rare ones
        rows = select_rows(st, n_rare * (per_row + 200), balance=0.0, seed=seed, first=frozenset({rare}))
        assert len(rows) == n_rare and all(has(r) for r in rows)
    with pytest.raises(ValueError, match="no captioned row of category nope"):
        select_rows(st, 10 ** 9, first=frozenset({"nope"}))


def test_cli_refuses_to_overwrite_and_unwritable_outs_before_packing(tmp_path, capsys):
    st = _store(tmp_path)
    pack_cmd = ["pack", "--latents", st.path, "--max-mb", "1", "--out"]
    assert main(pack_cmd + [str(tmp_path / "p.pack")]) == 0
    made = (tmp_path / "p.pack").read_bytes()
    capsys.readouterr()
    for argv, words in ((pack_cmd + [str(tmp_path / "p.pack")], "exists (use --force"),     # was overwritten
                        (pack_cmd + [str(tmp_path)], "is a folder"),                        # was a traceback
                        (pack_cmd + [str(tmp_path / "no" / "p.pack")], "does not exist"),   # was a traceback
                        (pack_cmd + [str(tmp_path / "q.pack"), "--max-mb", "0"], "--max-mb must be above 0"),
                        (["unpack", "--out", str(tmp_path), str(tmp_path / "p.pack")], "is a folder"),  # left OUT.tmp
                        (["pack", "--latents", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "q.pack")],
                         "latent store not found")):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("pack_store: error: ") and err.count("\n") == 1 and words in err, err
    assert (tmp_path / "p.pack").read_bytes() == made and not (tmp_path / "q.pack").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.manifest.csv"))
    assert main(pack_cmd + [str(tmp_path / "p.pack"), "--force"]) == 0
    assert main(["unpack", "--out", str(tmp_path / "u.safetensors"), str(tmp_path / "p.pack")]) == 0
    with pytest.raises(SystemExit) as e:
        main(["unpack", "--out", str(tmp_path / "u.safetensors"), str(tmp_path / "p.pack")])
    assert e.value.code == 2
    assert main(["unpack", "--out", str(tmp_path / "u.safetensors"), str(tmp_path / "p.pack"), "--force"]) == 0
