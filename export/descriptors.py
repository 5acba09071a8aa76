"""Component descriptors: what each exported graph takes and gives, and the shape ranges it serves.

One ``Descriptor`` per exported component (TensorRT demo/Diffusion's layout): input and output
names, dtypes, symbolic shapes, the dynamic axes (for ``torch.onnx.export``) and min/opt/max
ranges of every symbolic axis, from which the TensorRT optimisation profile of every input is
derived (``Descriptor.profile``).

Symbolic axes
    B   prompts in a batch (``--batch-sizes``)
    E   encoder rows: B, or 2·B with classifier-free guidance (cond rows then uncond rows)
    V   visible latent tokens at a decoding iteration: 0 .. N−1
    K   tokens predicted at a decoding iteration (from the mask plans of ``--iterations``)
    R   head rows: B·K
The axis ranges come from the static decoding tables (mask_schedule.MaskPlan), so the profile
covers exactly the shapes the decoding loop produces.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from impact_rt.config import ModelConfig
from impact_rt.mask_schedule import decoded_per_iteration

DTYPES = ("float32", "float16", "int64", "bool")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                      # one of DTYPES
    shape: tuple                    # ints and axis names (str)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class Descriptor:
    name: str                       # file stem: onnx/<name>.onnx, engines/<arch>/<name>.plan
    kind: str                       # project | encoder | head_step | head_sampler | vae_decoder | vocoder | text_encoder
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    axes: dict = field(default_factory=dict)     # axis name -> (min, opt, max)
    params: dict = field(default_factory=dict)   # e.g. {"diffusion_steps": 100, "cfg": True}

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s dynamic_axes: {tensor: {dim: axis name}}."""
        out = {}
        for t in (*self.inputs, *self.outputs):
            dyn = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if dyn:
                out[t.name] = dyn
        return out

    def concrete(self, spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else int(d) for d in spec.shape)

    def sizes(self, which: str) -> dict[str, int]:
        """Axis sizes at 'min', 'opt' or 'max'."""
        k = {"min": 0, "opt": 1, "max": 2}[which]
        return {a: int(r[k]) for a, r in self.axes.items()}

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """TensorRT optimisation profile: {input: (min shape, opt shape, max shape)}."""
        lo, opt, hi = self.sizes("min"), self.sizes("opt"), self.sizes("max")
        return {t.name: (self.concrete(t, lo), self.concrete(t, opt), self.concrete(t, hi)) for t in self.inputs}

    def max_shapes(self) -> dict[str, tuple[int, ...]]:
        """Largest shape of every input and output (static device buffers are sized by these)."""
        hi = self.sizes("max")
        return {t.name: self.concrete(t, hi) for t in (*self.inputs, *self.outputs)}

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind,
                "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
                "axes": {a: list(r) for a, r in self.axes.items()}, "params": dict(self.params)}

    @classmethod
    def from_json(cls, d: dict) -> "Descriptor":
        return cls(d["name"], d["kind"], tuple(TensorSpec.from_json(t) for t in d["inputs"]),
                   tuple(TensorSpec.from_json(t) for t in d["outputs"]),
                   {a: tuple(r) for a, r in d.get("axes", {}).items()}, dict(d.get("params", {})))


@dataclass(frozen=True)
class Profile:
    """The shapes an engine bundle is built for (only the TensorRT engines are limited by them;
    the ONNX graphs have dynamic axes and serve any size)."""

    batch_sizes: tuple[int, ...] = (1, 8)
    iterations: tuple[int, ...] = (4, 16, 64)
    diffusion_steps: tuple[int, ...] = (100,)

    def validate(self, cfg: ModelConfig) -> "Profile":
        """Batch sizes positive; every T and T̂ one the runtime accepts for this model (the very
        rule of ``DecodeConfig.validate``, so an export never makes a graph generation refuses)."""
        from impact_rt.config import ConfigError, DecodeConfig
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if not self.iterations or not self.diffusion_steps:
            raise ConfigError("need at least one iterations value and one diffusion-steps value")
        for t in self.iterations:
            for s in self.diffusion_steps:
                DecodeConfig(iterations=t, diffusion_steps=s).validate(cfg.num_tokens, cfg.train_steps)
        return self

    def to_json(self) -> dict:
        return {"batch_sizes": list(self.batch_sizes), "iterations": list(self.iterations),
                "diffusion_steps": list(self.diffusion_steps)}

    @classmethod
    def from_json(cls, d: dict) -> "Profile":
        return cls(tuple(d["batch_sizes"]), tuple(d["iterations"]), tuple(d["diffusion_steps"]))


def axis_ranges(cfg: ModelConfig, profile: Profile) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of B, E, V, K, R. opt batch is the first listed batch size; opt K the median
    of the per-iteration counts of every listed T; opt V half the tokens."""
    n = cfg.num_tokens
    bs = profile.batch_sizes
    b = (min(bs), bs[0], max(bs))
    ks = [k for t in profile.iterations for k in decoded_per_iteration(n, t)]
    k = (min(ks), int(round(statistics.median(ks))), max(ks))
    v_max = max(n - kk for t in profile.iterations for kk in decoded_per_iteration(n, t)[-1:])
    return {
        "B": b,
        "E": (b[0], 2 * b[1], 2 * b[2]),
        "V": (0, min(n // 2, v_max), v_max),
        "K": k,
        "R": (b[0] * k[0], b[1] * k[1], b[2] * k[2]),
    }


def _f(name, *shape, dtype="float32"):
    return TensorSpec(name, dtype, tuple(shape))


def sampler_name(steps: int, cfg: bool) -> str:
    return f"head_sampler_t{steps}" + ("" if cfg else "_nocfg")


def build(cfg: ModelConfig, profile: Profile, *, vae: bool = True, vocoder: bool = False,
          text_encoder: bool = False, text_tokens: int = 77, sampler_cfg: tuple[bool, ...] = (True,),
          vae_shape: tuple[int, int, int] = (8, 256, 16), mel_shape: tuple[int, int] = (1024, 64),
          samples: int = 163840) -> list[Descriptor]:
    """Descriptors of every component of one model for one profile."""
    ax = axis_ranges(cfg, profile)
    L, Dt, D, N, C = cfg.text_len, cfg.text_dim, cfg.dim, cfg.num_tokens, cfg.token_dim
    pick = lambda *names: {a: ax[a] for a in names}  # noqa: E731
    out = [
        Descriptor("project", "project", (_f("text_states", "B", L, Dt),),
                   (_f("cond", "B", L, D), _f("null_cond", "B", L, D)), pick("B")),
        Descriptor("encoder", "encoder",
                   (_f("tokens", "E", N, C), _f("cond", "E", L, D), _f("cond_mask", "E", L, dtype="bool"),
                    _f("visible_idx", "E", "V", dtype="int64"), _f("predicted_idx", "E", "K", dtype="int64")),
                   (_f("h", "E", "K", D),), pick("E", "V", "K")),
        Descriptor("head_step", "head_step",
                   (_f("x", "R", C), _f("t", "R", dtype="int64"), _f("c", "R", D)),
                   (_f("eps", "R", C), _f("v", "R", C)), pick("R")),
    ]
    for steps in profile.diffusion_steps:
        for use_cfg in sampler_cfg:
            out.append(sampler_descriptor(cfg, ax, steps, use_cfg))
    if vae:
        out.append(Descriptor("vae_decoder", "vae_decoder", (_f("latent", "B", *vae_shape),),
                              (_f("mel", "B", *mel_shape),), pick("B")))
    if vocoder:
        out.append(Descriptor("vocoder", "vocoder", (_f("mel", "B", *mel_shape),),
                              (_f("waveform", "B", samples),), pick("B")))
    if text_encoder:
        out.append(Descriptor("text_encoder", "text_encoder",
                              (_f("input_ids", "B", text_tokens, dtype="int64"),
                               _f("attention_mask", "B", text_tokens, dtype="int64")),
                              (_f("states", "B", L, Dt),), pick("B")))
    return out


def sampler_descriptor(cfg: ModelConfig, ax: dict, steps: int, use_cfg: bool) -> Descriptor:
    D, C = cfg.dim, cfg.token_dim
    ins = [_f("h_cond", "R", D)]
    if use_cfg:
        ins.append(_f("h_uncond", "R", D))
    ins.append(_f("noise", steps, "R", C))
    if use_cfg:
        ins.append(_f("guidance"))
    ins.append(_f("temperature"))
    return Descriptor(sampler_name(steps, use_cfg), "head_sampler", tuple(ins), (_f("x0", "R", C),),
                      {"R": ax["R"]}, {"diffusion_steps": int(steps), "cfg": bool(use_cfg)})
