"""ONNX export of every component, with the graph checks and the comparison against PyTorch.

The graphs are exported with the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``)
from thin wrapper modules that call the reference code itself (``IMPACT.text_proj``,
``LatentEncoder.forward``, ``sampler.sample_head``, ``AutoencoderKL.decode_latents``,
``HifiGan.forward``), so a graph cannot drift from the reference by construction; the checks
below then measure the numerical difference.

* ``head_sampler``: the whole T̂-step sampler of one decoding iteration, traced through
  ``sample_head`` with the schedule's per-step scalars (python floats) baked in and the loop
  unrolled: one graph per (T̂, cfg).
* precision ``fp16``: the wrapped module runs in half precision with fp32 inputs and outputs
  (casts at the boundary). The DDPM update of the sampler, the null condition and the VAE
  latent scale stay fp32 (x₀ reaches 1e5 at the first step of a schedule: fp16 would overflow);
  the sampler's x_t is saturated to the fp16 range before the half-precision head body.
  The text encoder is always fp32.
* Griffin-Lim is not exported (complex STFT/ISTFT): it stays in torch.
* ``aten::addcmul`` (the adaLN ``modulate`` of the diffusion head) is exported with our own
  symbolic (``_addcmul_symbolic``): torch's promotes a half-precision product to float32.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from impact_rt import ddpm
from impact_rt.sampler import sample_head

from .descriptors import Descriptor

FORBIDDEN_OPS = ("NonZero",)
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _cast(m: nn.Module, dt: torch.dtype) -> nn.Module:
    return m if dt == torch.float32 else copy.deepcopy(m).to(dt)


def _in(x: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    return x if dt == torch.float32 else x.to(dt)


def _out(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


# ---------------------------------------------------------------------------------------- wrappers

class ProjectGraph(nn.Module):
    """text states [B, L, D_text] → (cond [B, L, D], null_cond [B, L, D]). The mask is not a graph
    input: projection keeps it as is (``IMPACT.project_condition`` returns ``mask.bool()``)."""

    def __init__(self, model, dt=torch.float32):
        super().__init__()
        self.dt = dt
        self.text_proj = _cast(model.text_proj, dt)
        self.null_condition = model.null_condition          # the learned null stays fp32

    def forward(self, text_states):
        cond = _out(self.text_proj(_in(text_states, self.dt)))
        return cond, self.null_condition.expand(text_states.shape[0], -1, -1)


class EncoderGraph(nn.Module):
    def __init__(self, model, dt=torch.float32):
        super().__init__()
        self.dt = dt
        self.encoder = _cast(model.encoder, dt)

    def forward(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        return _out(self.encoder(_in(tokens, self.dt), _in(cond, self.dt), cond_mask, visible_idx, predicted_idx))


class HeadStepGraph(nn.Module):
    """One denoising step of the head: (x [R, C], t [R] original step, c [R, D]) → (ε̂, v)."""

    def __init__(self, model, dt=torch.float32):
        super().__init__()
        self.dt = dt
        self.head = _cast(model.head, dt)
        self.c = model.head.token_dim

    def forward(self, x, t, c):
        out = _out(self.head(_in(x, self.dt), t, _in(c, self.dt)))
        return out[:, :self.c], out[:, self.c:]


class _MixedHead(nn.Module):
    """The head's parts in a compute dtype with fp32 in/out, duck-typed for ``sample_head``."""

    def __init__(self, head, dt):
        super().__init__()
        self.head, self.dt, self.token_dim = _cast(head, dt), dt, head.token_dim

    def time_embed(self, t):
        return _out(self.head.time_embed(t))

    def cond_embed(self, c):
        return _out(self.head.cond_embed(_in(c, self.dt)))

    def step(self, x, y):
        # x_t of an untrained head can leave the fp16 range (x₀ ≈ x/√ᾱ): saturate instead of inf
        lim = torch.finfo(self.dt).max
        return _out(self.head.step(_in(x.clamp(-lim, lim), self.dt), _in(y, self.dt)))


class HeadSamplerGraph(nn.Module):
    """The whole T̂-step sampler of one iteration (``sampler.sample_head``), tables baked in."""

    def __init__(self, model, schedule: ddpm.Schedule, use_cfg: bool = True, dt=torch.float32):
        super().__init__()
        self.head = model.head if dt == torch.float32 else _MixedHead(model.head, dt)
        self.tab = schedule.tensors()
        self.use_cfg = use_cfg

    def forward(self, *args):
        if self.use_cfg:
            h_cond, h_uncond, noise, guidance, temperature = args
            return sample_head(self.head, self.tab, h_cond, h_uncond, noise, guidance, temperature)
        h_cond, noise, temperature = args
        return sample_head(self.head, self.tab, h_cond, None, noise, 1.0, temperature)


class VaeDecoderGraph(nn.Module):
    """Scaled latent [B, 8, 256, 16] → log-mel [B, 1024, 64] (``AutoencoderKL.decode_latents``)."""

    def __init__(self, vae, dt=torch.float32):
        super().__init__()
        self.dt = dt
        self.vae = _cast(vae, dt)
        self.register_buffer("scale_factor", vae.scale_factor.detach().float().clone())

    def forward(self, latent):
        if self.dt == torch.float32:
            return self.vae.decode_latents(latent)
        return _out(self.vae.decode(_in(latent / self.scale_factor, self.dt)))


class VocoderGraph(nn.Module):
    """log-mel [B, T, 64] → waveform [B, T·hop] (HiFi-GAN, weight norm folded)."""

    def __init__(self, vocoder, dt=torch.float32):
        super().__init__()
        voc = copy.deepcopy(vocoder)
        if getattr(voc, "has_weight_norm", False):
            voc.remove_weight_norm()
        self.dt = dt
        self.vocoder = voc.to(dt)

    def forward(self, mel):
        return _out(self.vocoder(_in(mel, self.dt)))


class TextEncoderGraph(nn.Module):
    """MiniLM (BERT) token ids + attention mask [B, 77] → states [B, 78, 384], as
    ``MiniLMConditioner.encode`` after tokenisation: masked token states + the normalised mean-pooled
    sentence embedding as the 78th vector. The tokenizer stays in Python."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        states = self.bert(input_ids, attention_mask).float()     # impact_rt.minilm.BertEncoder
        w = attention_mask[..., None].float()
        pooled = (states * w).sum(1) / w.sum(1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)[:, None]
        return torch.cat([states * w, pooled], 1)


def wrapper(desc: Descriptor, *, model=None, vae=None, vocoder=None, bert=None, precision: str = "fp32",
            train_steps: int = 1000) -> nn.Module:
    dt = TORCH_DTYPES[precision]
    k = desc.kind
    if k == "project":
        m = ProjectGraph(model, dt)
    elif k == "encoder":
        m = EncoderGraph(model, dt)
    elif k == "head_step":
        m = HeadStepGraph(model, dt)
    elif k == "head_sampler":
        sched = ddpm.sampling_schedule(train_steps, desc.params["diffusion_steps"])
        m = HeadSamplerGraph(model, sched, desc.params["cfg"], dt)
    elif k == "vae_decoder":
        m = VaeDecoderGraph(vae, dt)
    elif k == "vocoder":
        m = VocoderGraph(vocoder, dt)
    elif k == "text_encoder":
        m = TextEncoderGraph(bert)
    else:
        raise ValueError(f"unknown component kind {k!r}")
    return m.eval()


# ---------------------------------------------------------------------------------------- inputs

def sample_inputs(desc: Descriptor, sizes: dict[str, int], *, num_tokens: int, train_steps: int = 1000,
                  vocab: int = 30522, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random but valid inputs at the given axis sizes: index inputs are disjoint slices of a
    permutation (as the decoding loop makes them), masks keep at least one position."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    order = None
    for t in desc.inputs:
        shape = desc.concrete(t, sizes)
        if t.name in ("visible_idx", "predicted_idx"):
            if order is None:
                order = torch.stack([torch.randperm(num_tokens, generator=g) for _ in range(shape[0])])
            v = sizes["V"]
            out[t.name] = (order[:, :v] if t.name == "visible_idx" else order[:, v:v + sizes["K"]]).contiguous()
        elif t.name == "cond_mask":
            m = torch.rand(shape, generator=g) > 0.4
            m[:, -1] = True
            out[t.name] = m
        elif t.name == "t":
            out[t.name] = torch.randint(0, train_steps, shape, generator=g)
        elif t.name == "input_ids":
            ids = torch.randint(1000, vocab, shape, generator=g)
            out[t.name] = ids
        elif t.name == "attention_mask":
            lengths = torch.randint(2, shape[1] + 1, (shape[0],), generator=g)
            out[t.name] = (torch.arange(shape[1])[None] < lengths[:, None]).long()
        elif t.name == "guidance":
            out[t.name] = torch.tensor(3.0)
        elif t.name == "temperature":
            out[t.name] = torch.tensor(0.9)
        elif t.dtype == "float32":
            out[t.name] = torch.randn(shape, generator=g)
        else:
            raise ValueError(f"no sample input rule for {t.name} ({t.dtype})")
    if "input_ids" in out:  # padded positions hold the pad id 0, as the tokenizer gives
        out["input_ids"] = out["input_ids"] * out["attention_mask"]
    return out


def check_points(desc: Descriptor) -> list[dict[str, int]]:
    """Two shape points per graph: the trace point and another (dynamic axes must really be
    dynamic: a graph that froze a traced size fails at the second). Small, to keep checks fast."""
    lo, hi = desc.sizes("min"), desc.sizes("max")
    a, b = {}, {}
    for ax in desc.axes:
        if ax in ("B", "E"):
            a[ax], b[ax] = 2, 1
        elif ax == "V":
            a[ax], b[ax] = min(hi[ax], 37), 0
        elif ax == "K":
            a[ax] = min(hi[ax], 5)
            b[ax] = min(hi[ax], 3) if min(hi[ax], 3) != a[ax] else lo[ax]
        elif ax == "R":
            a[ax], b[ax] = 6, 3
    return [a, b] if desc.axes else [a]


# ---------------------------------------------------------------------------------------- export

def _addcmul_symbolic(g, self, tensor1, tensor2, value):
    """``aten::addcmul`` → self + tensor1·tensor2 (·value), in the operands' own dtype.

    torch's symbolic (opset 9, used for every later opset) multiplies by ``value`` as a float32
    constant of shape [1], not a 0-d scalar, so the exporter's type promotion casts a float16
    product up to float32: in an fp16 graph the rest of each diffusion-head ResBlock then ran in
    float32 (its Linear weights cast up and folded), and the next block's LayerNormalization got a
    float32 input with its float16 scale, an invalid graph (any head with two or more blocks; with
    one, the half-precision graph was silently float32 after the first ``modulate``)."""
    from torch.onnx import symbolic_helper
    prod = g.op("Mul", tensor1, tensor2)
    v = symbolic_helper._maybe_get_const(value, "f")
    if symbolic_helper._is_value(v) or float(v) != 1.0:
        prod = g.op("Mul", prod, g.op("CastLike", value, prod))
    return g.op("Add", self, prod)


_EXPORT_LOCK = threading.Lock()     # the symbolic registry and torch.onnx.export's globals are process-wide


@contextlib.contextmanager
def _symbolics(opset: int):
    """Our symbolics registered for one export, torch's own restored afterwards."""
    torch.onnx.register_custom_op_symbolic("aten::addcmul", _addcmul_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::addcmul", opset)


def export(desc: Descriptor, module: nn.Module, inputs: dict[str, torch.Tensor], path: Path,
           opset: int = 17) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(inputs[n] for n in desc.input_names)
    with _EXPORT_LOCK, _symbolics(opset), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic; the checks below are what count
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=desc.input_names, output_names=desc.output_names,
                          dynamic_axes=desc.dynamic_axes(), do_constant_folding=True)


def forbidden_ops(model: onnx.ModelProto, ops=FORBIDDEN_OPS) -> list[str]:
    """Names of nodes whose op is in ``ops``, in the main graph, every subgraph and every function."""
    found = []

    def walk(graph):
        for node in graph.node:
            if node.op_type in ops:
                found.append(f"{graph.name}/{node.name or node.op_type}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        walk(g)

    walk(model.graph)
    for f in model.functions:
        for node in f.node:
            if node.op_type in ops:
                found.append(f"function {f.name}/{node.name or node.op_type}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
    return found


ONNX_TYPES = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16,
              "int64": onnx.TensorProto.INT64, "bool": onnx.TensorProto.BOOL}


def check_graph(desc: Descriptor, path: Path) -> None:
    """onnx.checker (full check: strict shape inference), the I/O names and dtypes of the
    descriptor, symbolic axes kept symbolic, and no forbidden op. Raises ValueError (one line)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ValueError(f"{desc.name}: the exported graph is invalid: {first}") from None
    bad = forbidden_ops(inferred)
    if bad:
        raise ValueError(f"{desc.name}: forbidden ops in graph: {bad[:5]}")
    got_in = [(i.name, i.type.tensor_type.elem_type) for i in inferred.graph.input]
    want_in = [(t.name, ONNX_TYPES[t.dtype]) for t in desc.inputs]
    if got_in != want_in:
        raise ValueError(f"{desc.name}: graph inputs {got_in} differ from the descriptor {want_in}")
    for spec, out in zip(desc.outputs, inferred.graph.output):
        if out.name != spec.name or out.type.tensor_type.elem_type != ONNX_TYPES[spec.dtype]:
            raise ValueError(f"{desc.name}: graph output {out.name} does not match the descriptor {spec}")
        dims = out.type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            raise ValueError(f"{desc.name}: output {spec.name} has rank {len(dims)}, expected {len(spec.shape)}")
        for d, want in zip(dims, spec.shape):
            if isinstance(want, int) and d.HasField("dim_value") and d.dim_value != want:
                raise ValueError(f"{desc.name}: output {spec.name} dim {d.dim_value} != {want}")
            if isinstance(want, str) and d.HasField("dim_value"):
                raise ValueError(f"{desc.name}: output {spec.name} axis {want} was frozen to {d.dim_value}")


def tolerance(precision: str, ref32: np.ndarray, ref_same: np.ndarray | None) -> float:
    """fp32: 1e-4·max(1, max|ref|) (GEMM summation order is all that differs). Lower precision:
    DESIGN §4's rule on the max norm: 2·max|ref_same_dtype − ref_fp32| + 1e-3·max(1, max|ref|)."""
    scale = max(1.0, float(np.abs(ref32).max()) if ref32.size else 1.0)
    if precision == "fp32" or ref_same is None:
        return 1e-4 * scale
    return 2.0 * float(np.abs(ref_same - ref32).max()) + 1e-3 * scale


def compare(desc: Descriptor, session, torch_module: nn.Module, points: list[dict], *, precision: str,
            ref32_module: nn.Module | None = None, num_tokens: int, train_steps: int = 1000,
            vocab: int = 30522) -> dict:
    """Run the ONNX session and PyTorch on random inputs at each shape point: max/mean abs error over
    them all, ``tol`` (``summary_tol``), and one row per point and output."""
    rows = []
    for i, sizes in enumerate(points):
        inputs = sample_inputs(desc, sizes, num_tokens=num_tokens, train_steps=train_steps, vocab=vocab, seed=i + 1)
        feed = {k: v.numpy() for k, v in inputs.items()}
        got = session.run(desc.output_names, feed)
        args = tuple(inputs[n] for n in desc.input_names)
        with torch.inference_mode():
            same = torch_module(*args)
            same = [same] if isinstance(same, torch.Tensor) else list(same)
            ref32 = same if ref32_module is None else ref32_module(*args)
            ref32 = [ref32] if isinstance(ref32, torch.Tensor) else list(ref32)
        for name, g, r32, rs in zip(desc.output_names, got, ref32, same):
            r32, rs = r32.detach().float().numpy(), rs.detach().float().numpy()
            if g.shape != r32.shape:
                raise ValueError(f"{desc.name}: output {name} has shape {g.shape}, torch gives {r32.shape}")
            err = np.abs(g.astype(np.float64) - r32)
            tol = tolerance(precision, r32, None if ref32_module is None else rs)
            rows.append({"output": name, "sizes": sizes, "max_abs": float(err.max()) if err.size else 0.0,
                         "mean_abs": float(err.mean()) if err.size else 0.0,
                         "ref_max_abs": float(np.abs(r32).max()) if r32.size else 0.0, "tol": tol,
                         "finite": bool(np.isfinite(g).all())})
    ok = all(r["finite"] and r["max_abs"] <= r["tol"] for r in rows)
    return {"ok": ok, "max_abs": max(r["max_abs"] for r in rows), "mean_abs": float(np.mean([r["mean_abs"] for r in rows])),
            "tol": summary_tol(rows), "points": rows}


def summary_tol(points: list[dict]) -> float | None:
    """The one ``tol`` a graph is reported with (progress line, report, manifest, table): the
    tightest of its check points' tolerances. Each point (shape point × output) is held to its own
    ``tol`` (``tolerance``); ``ok`` is all of them."""
    return min((p["tol"] for p in points), default=None)


def session(path: Path, threads: int | None = None, providers=None):
    """A CPU (or given providers) session with the settings the ORT backend uses."""
    from impact_rt.ort_backend import session_options
    import onnxruntime as ort
    return ort.InferenceSession(str(path), session_options(threads), providers=providers or ["CPUExecutionProvider"])


def export_and_check(desc: Descriptor, path: Path, *, model=None, vae=None, vocoder=None, bert=None,
                     precision: str = "fp32", opset: int = 17, check: bool = True, vocab: int = 30522) -> dict:
    """Export one component to ``path``, check the graph, compare with PyTorch. Returns its report
    row; raises ValueError when a check fails."""
    num_tokens = model.cfg.num_tokens if model is not None else 256
    train_steps = model.cfg.train_steps if model is not None else 1000
    t0 = time.perf_counter()
    mod = wrapper(desc, model=model, vae=vae, vocoder=vocoder, bert=bert, precision=precision, train_steps=train_steps)
    points = check_points(desc)
    trace_inputs = sample_inputs(desc, points[0], num_tokens=num_tokens, train_steps=train_steps, vocab=vocab)
    export(desc, mod, trace_inputs, path, opset)
    export_s = time.perf_counter() - t0
    check_graph(desc, path)
    row = {"name": desc.name, "kind": desc.kind, "file": path.name, "bytes": path.stat().st_size,
           "export_s": round(export_s, 2), "precision": precision}
    if check:
        t1 = time.perf_counter()
        ref32 = None
        if precision != "fp32" and desc.kind != "text_encoder":
            ref32 = wrapper(desc, model=model, vae=vae, vocoder=vocoder, bert=bert, precision="fp32",
                            train_steps=train_steps)
        res = compare(desc, session(path), mod, points, precision=precision, ref32_module=ref32,
                      num_tokens=num_tokens, train_steps=train_steps, vocab=vocab)
        row.update(res)
        row["check_s"] = round(time.perf_counter() - t1, 2)
        if not res["ok"]:
            worst = max(res["points"], key=lambda r: r["max_abs"] / max(r["tol"], 1e-30))
            raise ValueError(f"{desc.name}: ONNX Runtime differs from PyTorch: max abs error {worst['max_abs']:.3g} "
                             f"> tolerance {worst['tol']:.3g} (output {worst['output']}, sizes {worst['sizes']})")
    return row
