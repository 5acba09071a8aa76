"""TensorRT: everything that does not need the library (profiles, cache keys, engine folders,
manifest records and their verification); engine builds and runs are skipped where TensorRT or
a CUDA device is missing (always on the development machine: the TensorRT path is unverified)."""
import json

import pytest
import torch

from export import descriptors as D
from export import manifest as M
from export import trt_build
from impact_rt import backends, trt_backend
from impact_rt.bundle import BundleError
from impact_rt.config import ConfigError, preset

from helpers import tiny_model

HAVE_TRT = trt_build.available()[0]


def _descs(batch=(1, 8), iterations=(4, 16, 64), steps=(100,)):
    return D.build(preset("test"), D.Profile(batch, iterations, steps), vocoder=True, sampler_cfg=(True, False))


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_available_says_why_not():
    ok, why = trt_backend.available()
    assert ok is False and ("tensorrt" in why.lower() or "cuda" in why.lower())
    assert backends.availability()["tensorrt"] == (False, why)
    with pytest.raises(ConfigError, match="not available"):
        trt_backend.load_backend(tiny_model(), None, None)


def test_profiles_cover_the_decoding_shapes():
    descs = {d.name: d for d in _descs()}
    enc = trt_build.dynamic_profile(descs["encoder"])
    assert set(enc) == {"tokens", "cond", "cond_mask", "visible_idx", "predicted_idx"}
    lo, opt, hi = enc["predicted_idx"]
    from impact_rt.mask_schedule import decoded_per_iteration
    ks = [k for t in (4, 16, 64) for k in decoded_per_iteration(256, t)]
    assert lo == (1, min(ks)) and hi == (16, max(ks))             # E = 2·B (CFG rows), K over every plan
    assert enc["visible_idx"][0] == (1, 0)                         # first iteration: nothing visible
    for name, (a, b, c) in enc.items():
        assert all(x <= y <= z for x, y, z in zip(a, b, c)), name
    s = trt_build.dynamic_profile(descs["head_sampler_t100"])
    assert set(s) == {"h_cond", "h_uncond", "noise"}                # scalars are static: no profile entry
    assert s["noise"][2] == (100, 8 * max(ks), 128)
    assert trt_build.dynamic_profile(descs["vocoder"])["mel"] == ((1, 1024, 64), (1, 1024, 64), (8, 1024, 64))


def test_builder_settings():
    d = _descs()[1]
    s16, s32 = trt_build.builder_settings(d, "fp16"), trt_build.builder_settings(d, "fp32")
    assert s16["strongly_typed"] and not s32["strongly_typed"] and not s32["tf32"]
    assert s16["profile"] == trt_build.dynamic_profile(d)
    with pytest.raises(ValueError, match="bf16"):
        trt_build.builder_settings(d, "bf16")


def test_engine_folder_and_cache_key():
    assert trt_build.arch_name(9, 0) == "sm90"
    assert trt_build.engine_dir_name("sm90", "10.7.0") == "sm90-trt10.7.0"
    descs = _descs()
    base = trt_build.cache_key("a" * 64, "fp16", descs, "sm90", "10.7.0")
    assert base == trt_build.cache_key("a" * 64, "fp16", _descs(), "sm90", "10.7.0")
    variants = [trt_build.cache_key("b" * 64, "fp16", descs, "sm90", "10.7.0"),
                trt_build.cache_key("a" * 64, "fp32", descs, "sm90", "10.7.0"),
                trt_build.cache_key("a" * 64, "fp16", _descs(batch=(1, 16)), "sm90", "10.7.0"),
                trt_build.cache_key("a" * 64, "fp16", descs, "sm89", "10.7.0"),
                trt_build.cache_key("a" * 64, "fp16", descs, "sm90", "10.8.0")]
    assert len({base, *variants}) == 6
    v = {"torch": "2.11.0", "onnx": "1.17.0", "onnxruntime": None, "tensorrt": "10.7.0"}
    assert M.versions_key("tensorrt", 17, v).startswith("trt10.7.0-")


def _fake_trt_bundle(tmp_path):
    """A bundle with an engine folder as trt_build.build_engines records it (plans are opaque bytes)."""
    root = tmp_path / "b"
    descs = _descs(steps=(4,))
    (root / "onnx").mkdir(parents=True)
    folder = trt_build.engine_dir_name("sm90", "10.7.0")
    (root / "engines" / folder).mkdir(parents=True)
    for d in descs:
        (root / "onnx" / f"{d.name}.onnx").write_bytes(b"onnx " + d.name.encode())
        (root / "engines" / folder / f"{d.name}.plan").write_bytes(b"plan " + d.name.encode())
    m = {"backend": "tensorrt", "exporter_version": M.EXPORTER_VERSION, "model_hash": "c" * 64, "precision": "fp16", "opset": 17,
         "libraries": dict(M.library_versions(), tensorrt="10.7.0"),
         "components": [dict(d.to_json(), file=f"onnx/{d.name}.onnx") for d in descs],
         "engines": {folder: trt_build.engine_record(descs, model_hash="c" * 64, precision="fp16", arch="sm90",
                                                     version="10.7.0", gpu="NVIDIA H100")}}
    return root, M.write(root, m), folder


def test_engine_records_are_verified(tmp_path):
    root, m, folder = _fake_trt_bundle(tmp_path)
    rec = m["engines"][folder]
    assert rec["dir"] == f"engines/{folder}" and rec["tensorrt"] == "10.7.0" and rec["arch"] == "sm90"
    assert set(rec["components"]) == {c["name"] for c in m["components"]}
    for plan in rec["components"].values():
        assert plan in m["files"]
    assert M.verify(root, backend="tensorrt", model_hash="c" * 64, precision="fp16")
    assert trt_backend.check_engine_entry(m, folder, "10.7.0") is rec
    assert trt_backend.check_engine_entry(m, "sm89-trt10.7.0", "10.7.0") is None   # another GPU: build anew
    with pytest.raises(M.VersionMismatchError, match="TensorRT 10.7.0, installed 10.8.0") as e:
        trt_backend.check_engine_entry(m, folder, "10.8.0", root)
    assert isinstance(e.value, BundleError) and "\n" not in str(e.value)
    plan = root / rec["components"]["encoder"]
    plan.write_bytes(b"plan encoder, edited")
    with pytest.raises(M.IntegrityError, match="encoder.plan was changed"):
        M.verify(root, backend="tensorrt")
    raw = json.loads((root / M.MANIFEST).read_text())
    raw["engines"][folder]["tensorrt"] = "10.8.0"                  # hand-edited record
    (root / M.MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(M.IntegrityError, match="modified"):
        M.verify(root, backend="tensorrt")


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT or a CUDA device is not available here: engine builds are unverified")
def test_build_and_run_engines_match_torch(tmp_path):  # pragma: no cover - needs TensorRT and a GPU
    from impact_rt.config import DecodeConfig
    from impact_rt.decoding import RecordedNoise, TorchNoise, decode
    from impact_rt.reference import TorchBackend
    from impact_rt.text_conditioner import HashConditioner
    model = tiny_model(scale=0.5).cuda()
    be = trt_backend.load_backend(model, None, None, precision="fp32", engine_path=tmp_path / "eb",
                                  profile=D.Profile((1, 2), (4,), (10,)))
    dc = DecodeConfig(iterations=4, diffusion_steps=10, guidance=3.0)
    states, mask = HashConditioner(model.cfg.text_len, model.cfg.text_dim).encode(["rain", "wind"])
    states, mask = states.cuda(), mask.cuda()
    rec = RecordedNoise.wrap(TorchNoise([1, 2], device="cuda"))
    with torch.inference_mode():
        ref_b = TorchBackend(model)
        ref = decode(ref_b, model.cfg, dc, *ref_b.project(states, mask), *ref_b.null(2), rec)
        got = decode(be, model.cfg, dc, *be.project(states, mask), *be.null(2), rec.replay())
    assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-4
