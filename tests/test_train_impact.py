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
