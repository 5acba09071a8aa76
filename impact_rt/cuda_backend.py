"""The ``cuda`` backend (issue 6): the fused Triton sampler and CUDA-graph decoding.

Two ways to use it:

* Per step, like every backend (``decoding.decode`` calls ``encode`` and ``sample``): the latent
  encoder runs eagerly on the GPU in the chosen precision, and ``sample`` runs the whole T̂-step
  head sampler as ONE launch of the fused kernel with the injected noise it is given. This is
  the path the parity tests drive with ``RecordedNoise``.
* ``decode_all``: the fast path. Each decoding iteration (latent encoder + cond_embed GEMM +
  fused sampler with in-kernel Philox noise + scatter into the token state) is captured once per
  ``CaptureKey`` (batch, T, T̂, CFG, precision) as a ``torch.cuda.CUDAGraph`` and replayed. The
  prompts, the decoding order, the per-sample seeds, β(t) (a device table) and the temperature
  live in static device buffers, so new prompts / seeds / β_max / temperature replay the same
  graphs; nothing inside the loop syncs with the host or passes a Python scalar that changes
  between calls.

Precision: ``fp16`` (default), ``bf16`` or ``fp32`` for the encoder and the head's matrices;
the head's state, accumulation, cond_embed and the DDPM update are fp32.
"""
from __future__ import annotations

import copy
import itertools
import os
import threading

import torch
import torch.nn.functional as F

from . import ddpm
from .config import ConfigError, DecodeConfig, ModelConfig
from .cuda_graphs import PRECISIONS, CaptureKey, DecodePlan, FusedConfig, GraphCache, choose_config
from .decoding import refine_seeds
from .mask_schedule import MaskPlan
from .model import IMPACT
from .patchify import tokens_to_latent

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_PRECISION = "fp16"
DEFAULT_GEMM_ROWS = 256    # see CudaBackend.gemm_rows (the fused kernel below it, when the head is not compiled)
DEFAULT_COMPILE_HEAD = "inductor"   # on CUDA; see head_path
STEP_KERNEL_MAX_ROWS = 32           # cond rows an iteration up to which ``step_kernels`` runs the head


def step_kernels_from(value):
    """The ``StepConfig`` of the step-kernel head path (kernels/step_kernels.py: 2 + 2d Triton
    launches a sampling step, captured with the iteration) from a StepConfig, None, or a string
    as IMPACT_RT_STEP_KERNELS takes it: "" / "0" / "none" / "off" → None (the path is off);
    otherwise comma-separated flags among "on", "pdl" (programmatic dependent launch, Hopper),
    "noprefetch" (with pdl: no weight prefetch before the wait), "partials" (LayerNorm partials
    written by the producing launch) and "splitkN" (the block launches' K split over N programs,
    N a power of two), e.g. "pdl,partials" or "partials,splitk4"."""
    from kernels.step_kernels import StepConfig
    if value is None or isinstance(value, StepConfig):
        return value
    flags = {f.strip().lower() for f in str(value).split(",")} - {""}
    if not flags or flags & {"0", "none", "off"}:
        return None
    split = [f for f in flags if f.startswith("splitk")]
    unknown = flags - {"on", "1", "pdl", "noprefetch", "partials"} - set(split)
    if unknown or len(split) > 1 or any(not f[6:].isdigit() for f in split):
        bad = sorted(unknown) or split
        raise ConfigError(f"step kernels: unknown flags {bad} (known: on, pdl, noprefetch, partials, splitkN)")
    if "noprefetch" in flags and "pdl" not in flags:
        raise ConfigError("step kernels: noprefetch only goes with pdl")
    return StepConfig(pdl="pdl" in flags, pdl_prefetch="noprefetch" not in flags, ln_partials="partials" in flags,
                      split_k=int(split[0][6:]) if split else 1)


def head_path(device_type: str, compile_head: str | None = None, gemm_rows: int | None = None,
              env=os.environ) -> tuple[str, int]:
    """(torch.compile backend of the GEMM path's step, "" for none; gemm_rows) for a backend on
    ``device_type``. Arguments win, then IMPACT_RT_COMPILE_HEAD / IMPACT_RT_GEMM_ROWS, then the
    defaults: on CUDA the step compiled by inductor and GEMMs for every row count (the fastest
    path in every decode cell on an H100, session 9, and its GPU parity test passed on an H200,
    session 10: docs/benchmarks.md); elsewhere (the interpreter tests) no compile and the fused
    kernel below DEFAULT_GEMM_ROWS rows. IMPACT_RT_COMPILE_HEAD=none turns the compile off, which
    brings the fused kernel back for few rows."""
    if compile_head is None:
        compile_head = env.get("IMPACT_RT_COMPILE_HEAD")
    if compile_head is None:
        compile_head = DEFAULT_COMPILE_HEAD if device_type == "cuda" else ""
    if _compile_off(compile_head):
        compile_head = ""
    if gemm_rows is None:
        rows = env.get("IMPACT_RT_GEMM_ROWS")
        gemm_rows = int(rows) if rows else (1 if compile_head else DEFAULT_GEMM_ROWS)
    if gemm_rows < 1:
        raise ConfigError(f"gemm_rows must be at least 1, got {gemm_rows}")
    return compile_head, int(gemm_rows)


def encoder_path(compile_encoder: str | None = None, env=os.environ) -> str:
    """torch.compile backend ("" for none, optionally "backend:mode") of the latent encoder inside
    each captured decoding iteration. The argument wins, then IMPACT_RT_COMPILE_ENCODER; off by
    default: untimed on a GPU. Why it may pay at batch 1 (docs/benchmarks.md, session 13): one
    encoder call is ~320 GPU kernels, ~220 of them LayerNorms, residual adds, GELUs, transposes
    and gathers that inductor can fuse around cuBLAS's 98 GEMMs, at ~2 µs a graph node."""
    if compile_encoder is None:
        compile_encoder = env.get("IMPACT_RT_COMPILE_ENCODER", "")
    return "" if _compile_off(compile_encoder) else compile_encoder.strip()


def _compile_off(spec: str) -> bool:
    """Whether a compile option ("backend[:mode]") says: no torch.compile."""
    return spec.strip().lower() in ("", "none", "off", "0")


def _compiled(fn, spec: str):
    """``fn`` through torch.compile with the backend and optional mode of ``spec`` ("backend[:mode]"),
    dynamic shapes, one graph."""
    backend, _, mode = spec.partition(":")
    return torch.compile(fn, backend=backend, mode=mode or None, dynamic=True, fullgraph=True)


def make_encoder(encoder, compile_encoder: str = ""):
    """The latent encoder as the iteration calls it: itself, or through torch.compile with the
    backend (and mode) named by ``compile_encoder`` (see encoder_path). Shapes vary with the
    iteration (visible and predicted counts), hence dynamic; the warm-up pass before capture
    compiles every shape the captured iterations meet."""
    return _compiled(encoder, compile_encoder) if compile_encoder else encoder


def make_gemm_step(head, dtype: torch.dtype, token_dim: int, compile_head: str = ""):
    """One reverse step of the GEMM path: ``head`` (in ``dtype``) on [x; x] (CFG), guidance,
    posterior update; state fp32. Through torch.compile with the backend named by
    ``compile_head`` ("" for none; see head_path), optionally with a mode after a colon:
    "inductor:max-autotune-no-cudagraphs" lets inductor use Triton GEMM templates with the
    elementwise work fused into their epilogues (fewer launches a step than cuBLAS + pointwise
    kernels; our own CUDA graphs replay it, hence no-cudagraphs). Not yet timed on a GPU."""
    c = token_dim

    def step(x, c_emb, t_emb_i, coef, noise, guidance, temperature, mods=None):
        r = x.shape[0]
        cfg = c_emb.shape[0] != r
        xx = torch.cat([x, x]) if cfg else x
        if mods is None:
            out = head.step(xx.to(dtype), (c_emb + t_emb_i).to(dtype)).float()
        else:
            out = head.step_modulated(xx.to(dtype), mods).float()
        eps, v = out[:r, :c], out[:r, c:]
        if cfg:
            eps = out[r:, :c] + guidance * (eps - out[r:, :c])
        x = coef[0] * x - coef[1] * eps
        if noise is not None:
            x = x + torch.exp(0.5 * (coef[2] + coef[3] * v)) * (noise * temperature)
        return x

    return _compiled(step, compile_head) if compile_head else step   # e.g. "inductor:max-autotune-no-cudagraphs"


def gemm_sampling_loop(step, c_emb, t_emb, coefs, noise, guidance, temperature, mods=None) -> torch.Tensor:
    """The T̂-step reverse process of the GEMM path with ``step`` (``make_gemm_step``) → x_0 fp32.

    c_emb [R or 2R (CFG), w] fp32; t_emb [T̂, w]; coefs [T̂, 4]; noise [T̂, R, C] (slot 0 = x_T̂,
    slot j+1 the noise after position j); mods [T̂, rows, ada_n]: every step's adaLN modulations
    (None: computed inside each step from c_emb + t_emb)."""
    steps = t_emb.shape[0]
    x = noise[0]
    for j in range(steps):
        i = steps - 1 - j
        x = step(x, c_emb, t_emb[i], coefs[i], noise[j + 1] if i > 0 else None, guidance, temperature,
                 None if mods is None else mods[i])
    return x


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def available() -> tuple[bool, str]:
    if not torch.cuda.is_available():   # first: on a CPU machine triton's import (~0.1 s) is not needed
        return False, f"no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False)"
    try:
        import triton
    except ImportError:
        return False, "triton is not installed (pip install 'impact-rt[gpu]')"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return False, f"needs a GPU of compute capability >= 8.0, found sm_{major}{minor}"
    return True, (f"fused Triton {triton.__version__} sampler + CUDA graphs on "
                  f"{torch.cuda.get_device_name()} (sm_{major}{minor})")


def load_backend(model: IMPACT, vae, vocoder, *, bundle_path=None, device="cuda", precision=None):
    ok, why = available()
    if not ok:
        raise ConfigError(f"backend cuda is not available here: {why}")
    dev = torch.device(device) if device not in (None, "cpu") else torch.device("cuda")
    if dev.type != "cuda":
        raise ConfigError(f"the cuda backend runs on a CUDA device, got device {device!r}")
    return CudaBackend(model, vae, vocoder, device=dev, precision=precision or DEFAULT_PRECISION)


class CudaBackend:
    """See the module docstring. ``device='cpu'`` is accepted only under TRITON_INTERPRET=1 (tests),
    where ``decode_all`` runs the same static-buffer loop eagerly (no graphs)."""

    name = "cuda"

    def __init__(self, model: IMPACT, vae=None, vocoder=None, *, device="cuda", precision: str = DEFAULT_PRECISION,
                 use_graphs: bool | None = None, config: FusedConfig | None = None, max_graphs: int = 8,
                 gemm_rows: int | None = None, compile_head: str | None = None, adaln_table: bool | None = None,
                 step_kernels=None, step_rows: int = STEP_KERNEL_MAX_ROWS, compile_encoder: str | None = None):
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        if self.device.type != "cuda" and not _interpreting():
            raise ConfigError("the cuda backend needs a CUDA device (CPU only under TRITON_INTERPRET=1, for tests)")
        from kernels.fused_sampler import pack_head   # imports Triton
        self.precision, self.dtype = precision, DTYPES[precision]
        self.cfg: ModelConfig = model.cfg
        self.vae, self.vocoder = vae, vocoder
        # The master fp32 head stays for the tables (time embedding) and cond_embed (fp32 GEMM).
        self.head32 = copy.deepcopy(model.head).float().to(self.device).eval()
        self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        self.weights = pack_head(model.head, self.dtype, self.device)
        self.use_graphs = (self.device.type == "cuda") if use_graphs is None else bool(use_graphs)
        if self.use_graphs and self.device.type != "cuda":
            raise ConfigError("CUDA graphs need a CUDA device")
        self.config = config
        # Rows (cond rows of one iteration) from which the head runs as GEMMs instead of the fused
        # kernel, and the torch.compile backend of the GEMM path's step (LayerNorm, modulation,
        # SiLU, gating and the DDPM update fused around the GEMMs: ~50 launches a step down to ~20).
        # head_path gives the defaults: on CUDA inductor and GEMMs at every row count (H100,
        # session 9: batch 1 T=64 0.41 s vs 0.63 s for the fused kernel; T=8 59 vs 133 ms; batch 64
        # T=4 149 vs 111 clips/s); the fused kernel stays for IMPACT_RT_COMPILE_HEAD=none.
        self.compile_head, self.gemm_rows = head_path(self.device.type, compile_head, gemm_rows)
        self.adaln_table = adaln_table      # the GEMM path's adaLN table (gemm_adaln_table); None: default
        self._gemm_step = make_gemm_step(self.model.head, self.dtype, self.weights.token_dim, self.compile_head)
        # The latent encoder of every iteration, optionally through torch.compile (encoder_path).
        self.compile_encoder = encoder_path(compile_encoder)
        self.encoder = make_encoder(self.model.encoder, self.compile_encoder)
        # The step-kernel head path for iterations of few rows (≤ step_rows cond rows):
        # a StepConfig (or IMPACT_RT_STEP_KERNELS, see step_kernels_from). Off by default: on an
        # H100 (session 13) batch 1 T=64 took 0.426-0.451 s with it against 0.4065 s for the
        # inductor step (docs/benchmarks.md).
        self.step_config = step_kernels_from(step_kernels if step_kernels is not None
                                             else os.environ.get("IMPACT_RT_STEP_KERNELS"))
        if self.step_config is not None and self.step_config.pdl:
            from kernels.step_kernels import check_pdl
            try:
                check_pdl(self.device)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        self.step_rows = int(step_rows)
        self.sm_count = (torch.cuda.get_device_properties(self.device).multi_processor_count
                         if self.device.type == "cuda" else 1)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.graphs = GraphCache(max_graphs)
        self._lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------------
    def schedule_tables(self, schedule: ddpm.Schedule) -> tuple[torch.Tensor, torch.Tensor]:
        from kernels.fused_sampler import head_tables
        key = schedule.key
        if key not in self._tables:
            with torch.inference_mode():
                self._tables[key] = head_tables(self.head32, schedule.tensors(device=self.device), self.device)
        return self._tables[key]

    def cond_embed(self, h: torch.Tensor) -> torch.Tensor:
        """c_emb = cond_embed(h) in fp32 (once per iteration; the kernel adds t_emb per step)."""
        lin = self.head32.cond_embed
        return F.linear(h.float(), lin.weight, lin.bias)

    def sample_gemm(self, c_cond, c_uncond, coefs, t_emb, seeds, rows_per_seed: int, stream: int,
                    guidance: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """The head's T̂-step loop as separate GEMM launches (cuBLAS), for many rows.

        Same math and the same Philox noise as the fused kernel (``philox_noise`` materialises the
        kernel's stream), weights in the backend's precision, state and update in fp32; no host
        sync, so it is captured in the iteration's graph like the kernel. c_cond/c_uncond: the
        fp32 condition embeddings [R, w] (``cond_embed``)."""
        noise, c_emb = self._head_inputs(c_cond, c_uncond, t_emb.shape[0], seeds, rows_per_seed, stream)
        mods = None
        if self.gemm_adaln_table(t_emb.shape[0], c_emb.shape[0]):   # every step's adaLN modulation in 4 GEMMs
            mods = self._modulation_table(c_emb, t_emb)
        return gemm_sampling_loop(self._gemm_step, c_emb, t_emb, coefs, noise, guidance, temperature, mods)

    def sample_step_kernels(self, c_cond, c_uncond, coefs, t_emb, seeds, rows_per_seed: int, stream: int,
                            guidance: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """The head's T̂-step loop as 2 + 2d Triton launches a step (kernels/step_kernels.py), for
        few rows: the same math, the same adaLN table and the same Philox noise as ``sample_gemm``,
        no host sync (captured in the iteration's graph)."""
        from kernels.step_kernels import sample_steps
        noise, c_emb = self._head_inputs(c_cond, c_uncond, t_emb.shape[0], seeds, rows_per_seed, stream)
        return sample_steps(self.weights, self._modulation_table(c_emb, t_emb), coefs, noise, guidance, temperature,
                            cfg=c_uncond is not None, config=self.step_config)

    def _head_inputs(self, c_cond, c_uncond, steps: int, seeds, rows_per_seed: int, stream: int):
        """(noise [T̂, R, C]: the fused kernel's Philox stream materialised by ``philox_noise``,
        c_emb: the cond rows then the uncond rows) for the head paths outside the fused kernel."""
        from kernels.fused_sampler import philox_noise
        noise = philox_noise(seeds, rows_per_seed, steps, self.weights.token_dim, stream=stream)
        return noise, (c_cond if c_uncond is None else torch.cat([c_cond, c_uncond]))

    def _modulation_table(self, c_emb, t_emb):
        """Every step's adaLN modulations [T̂, rows, (3d+2)·w] in the backend's precision."""
        return self.model.head.modulations((c_emb[None] + t_emb[:, None]).to(self.dtype))

    def gemm_adaln_table(self, steps: int, rows: int) -> bool:
        """Whether the GEMM path precomputes the adaLN modulations of all ``steps`` for ``rows``
        (cond + uncond) rows: 11 of the head's 17 w² matrices leave the step, 4 GEMMs of a few rows
        become 4 of steps × rows. Capped at ``ADALN_TABLE_MAX_BYTES`` (batch 1 at T = 64: 18 MB;
        batch 16 at T = 4 would need 4.6 GB and runs without). ``adaln_table`` given to the backend
        wins; else IMPACT_RT_ADALN_TABLE=0 turns it off. Unmeasured on a GPU (next lease)."""
        from kernels.fused_sampler import adaln_table_wanted
        nbytes = steps * rows * self.weights.ada_n * torch.finfo(self.dtype).bits // 8
        return adaln_table_wanted(nbytes, self.adaln_table)

    def fused_config(self, rows: int) -> FusedConfig:
        """The launch configuration for ``rows`` (``config`` given to the backend wins).

        IMPACT_RT_MAX_SPLIT=1 in the environment turns the column split (grid barriers) off."""
        if self.config is not None:
            return self.config
        cap = os.environ.get("IMPACT_RT_MAX_SPLIT")
        return choose_config(rows, self.weights.width, self.weights.token_dim, self.sm_count,
                             max_split=int(cap) if cap else None)

    # -- Backend interface --------------------------------------------------------------------
    @torch.inference_mode()
    def project(self, states, mask):
        return self.model.project_condition(states.to(self.device, self.dtype), mask.to(self.device))

    @torch.inference_mode()
    def null(self, batch: int):
        return self.model.null(batch)

    @torch.inference_mode()
    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        dev = self.device
        return self.encoder(tokens.to(dev, self.dtype), cond.to(dev, self.dtype), cond_mask.to(dev),
                            visible_idx.to(dev), predicted_idx.to(dev))

    @torch.inference_mode()
    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        from kernels.fused_sampler import fused_sample
        t_emb, coefs = self.schedule_tables(schedule)
        cc = self.cond_embed(h_cond.to(self.device))
        cu = None if h_uncond is None else self.cond_embed(h_uncond.to(self.device))
        return fused_sample(self.weights, cc, cu, t_emb, coefs, noise.to(self.device, torch.float32),
                            guidance, temperature, config=self.fused_config(cc.shape[0]))

    @torch.inference_mode()
    def audio(self, tokens):
        cfg = self.cfg
        # The VAE and the vocoder run where the pipeline put them (e.g. Griffin-Lim's buffers on CPU).
        latent = tokens_to_latent(tokens.float().to(_module_device(self.vae, tokens.device)), cfg)
        mel = self.vae.decode_latents(latent)
        return self.vocoder(mel.to(_module_device(self.vocoder, mel.device)))

    # -- fast path ----------------------------------------------------------------------------
    @torch.inference_mode()
    def decode_all(self, model_cfg: ModelConfig, dc: DecodeConfig, cond, cond_mask, null_cond, null_mask,
                   seeds, order, tables=None, on_iteration=None, refine_orders=()) -> torch.Tensor:
        """The whole decoding loop → tokens [B, N, C] fp32 (on this backend's device).

        ``cond``/``cond_mask``: ``project`` output [B, L, D]; ``null_cond``/``null_mask``: ``null(B)``;
        ``seeds``: B per-sample seeds (ints or an int64 tensor), the Philox keys of the head noise;
        ``order`` [B, N]: the per-sample decoding order (e.g. ``TorchNoise(seeds).order(B, N)``, so
        that the order matches the other backends). ``tables``: ``DecodeTables`` (for β(t)).
        ``refine_orders``: one order per re-masking pass (``dc.refine``), e.g. from
        ``TorchNoise(seeds).refine(p)``; pass p replays the graphs of its iterations with that order
        and the seeds ``refine_seeds(seeds, p)`` as Philox keys, so it needs no capture of its own.
        Graphs are captured on the first call for a ``CaptureKey`` and replayed afterwards.
        """
        b = cond.shape[0]
        key = CaptureKey.build(b, dc, model_cfg, self.precision)
        if tables is not None:
            guidance = tuple(float(v) for v in tables.guidance)
        else:
            from .mask_schedule import guidance_schedule
            guidance = tuple(guidance_schedule(dc.iterations, dc.guidance))
        schedule = tables.schedule if tables is not None else \
            ddpm.sampling_schedule(model_cfg.train_steps, dc.diffusion_steps)
        seeds = torch.as_tensor(seeds, dtype=torch.int64).reshape(-1)
        if seeds.numel() != b or tuple(order.shape) != (b, model_cfg.num_tokens):
            raise ConfigError(f"decode_all: need {b} seeds and an order [{b}, {model_cfg.num_tokens}]")
        if len(refine_orders) != dc.refine or any(tuple(o.shape) != (b, model_cfg.num_tokens) for o in refine_orders):
            raise ConfigError(f"decode_all: need {dc.refine} re-masking orders [{b}, {model_cfg.num_tokens}]")
        refine = [(o, torch.tensor(refine_seeds(seeds.tolist(), p), dtype=torch.int64))
                  for p, o in enumerate(refine_orders)]
        start = MaskPlan.build(model_cfg.num_tokens, dc.iterations).refine_start(dc.refine_share)
        with self._lock:
            runner = self.graphs.get(key)
            if runner is not None and runner.schedule_key != schedule.key:
                runner = None   # same shapes, other DDPM tables: the captured graphs read the old ones
            if runner is None:
                runner = _LoopRunner(self, key, schedule)
                runner.load(cond, cond_mask, null_cond, null_mask, order, seeds, guidance, dc.temperature)
                if self.use_graphs:
                    runner.capture()
                self.graphs.put(key, runner)
            else:
                runner.load(cond, cond_mask, null_cond, null_mask, order, seeds, guidance, dc.temperature)
            return runner.run(on_iteration, refine, start)

    @property
    def stats(self) -> dict:
        return {"captures": self.graphs.captures, "hits": self.graphs.hits, "cached": len(self.graphs)}

    def close(self):
        self.graphs.clear()
        self._tables.clear()
        self.weights = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _module_device(module, default: torch.device) -> torch.device:
    for t in itertools.chain(module.parameters(), module.buffers()) if isinstance(module, torch.nn.Module) else ():
        return t.device
    return default


class _LoopRunner:
    """Static buffers + per-iteration CUDA graphs of one ``CaptureKey``."""

    def __init__(self, backend: CudaBackend, key: CaptureKey, schedule: ddpm.Schedule):
        self.be, self.key, self.schedule_key = backend, key, schedule.key
        cfg = backend.cfg
        cap = os.environ.get("IMPACT_RT_MAX_SPLIT")
        self.plan = DecodePlan.build(key, 1.0, backend.weights.width, backend.sm_count, backend.config,
                                     max_split=int(cap) if cap else None)
        dev, act = backend.device, backend.dtype
        b, n, c = key.batch, key.num_tokens, key.token_dim
        enc_b = 2 * b if key.cfg else b
        # The static buffers (cuda_graphs.buffer_plan lists the same set).
        self.cond = torch.zeros((enc_b, cfg.text_len, cfg.dim), device=dev, dtype=act)
        self.cond_mask = torch.ones((enc_b, cfg.text_len), device=dev, dtype=torch.bool)
        self.order = torch.zeros((b, n), device=dev, dtype=torch.int64)
        self.seeds = torch.zeros((b,), device=dev, dtype=torch.int64)
        self.guidance = torch.ones((key.iterations,), device=dev, dtype=torch.float32)
        self.temperature = torch.ones((1,), device=dev, dtype=torch.float32)
        self.tokens = torch.zeros((b, n, c), device=dev, dtype=torch.float32)
        self.t_emb, self.coefs = backend.schedule_tables(schedule)
        self.graphs: list = []
        self.pool = None

    def load(self, cond, cond_mask, null_cond, null_mask, order, seeds, guidance, temperature):
        b, dev = self.key.batch, self.be.device
        self.cond[:b].copy_(cond.to(dev), non_blocking=True)
        self.cond_mask[:b].copy_(cond_mask.to(dev), non_blocking=True)
        if self.key.cfg:
            self.cond[b:].copy_(null_cond.to(dev), non_blocking=True)
            self.cond_mask[b:].copy_(null_mask.to(dev), non_blocking=True)
        self.order.copy_(order.to(dev), non_blocking=True)
        self.seeds.copy_(seeds.to(dev), non_blocking=True)
        self.guidance.copy_(torch.tensor(guidance, dtype=torch.float32), non_blocking=True)
        self.temperature.fill_(float(temperature))

    def iteration(self, t: int):
        """One decoding iteration on the static buffers (what each graph captures)."""
        from kernels.fused_sampler import fused_sample
        be, it = self.be, self.plan.iterations[t]
        b, k, c = self.key.batch, it.predicted, self.key.token_dim
        vis = self.order[:, it.visible_start:]
        pred = self.order[:, it.predicted_start:it.predicted_stop]
        tok = self.tokens.to(be.dtype)
        if self.key.cfg:
            h = be.encoder(torch.cat([tok, tok]), self.cond, self.cond_mask,
                           torch.cat([vis, vis]), torch.cat([pred, pred]))
            cemb = be.cond_embed(h.reshape(2 * b * k, -1))
            cc, cu = cemb[:b * k], cemb[b * k:]
        else:
            h = be.encoder(tok, self.cond, self.cond_mask, vis, pred)
            cc, cu = be.cond_embed(h.reshape(b * k, -1)), None
        if be.step_config is not None and b * k <= be.step_rows:   # few rows, step kernels asked for
            x0 = be.sample_step_kernels(cc, cu, self.coefs, self.t_emb, self.seeds, k, it.stream,
                                        self.guidance[t:t + 1], self.temperature)
        elif b * k >= be.gemm_rows:   # many rows: cuBLAS GEMMs beat the fused kernel (docs/benchmarks.md)
            x0 = be.sample_gemm(cc, cu, self.coefs, self.t_emb, self.seeds, k, it.stream,
                                self.guidance[t:t + 1], self.temperature)
        else:
            x0 = fused_sample(be.weights, cc, cu, self.t_emb, self.coefs, self.seeds,
                              self.guidance[t:t + 1], self.temperature, rows_per_seed=k, stream=it.stream,
                              config=it.config)
        self.tokens.scatter_(1, pred[..., None].expand(-1, -1, c), x0.view(b, k, c))

    def capture(self):
        it_count = self.key.iterations
        side = torch.cuda.Stream(self.be.device)
        side.wait_stream(torch.cuda.current_stream(self.be.device))
        with torch.cuda.stream(side):     # warm-up: Triton JIT, cuBLAS handles, allocator
            self.tokens.zero_()
            for t in range(it_count):
                self.iteration(t)
        torch.cuda.current_stream(self.be.device).wait_stream(side)
        self.pool = torch.cuda.graph_pool_handle()
        for t in range(it_count):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self.pool):
                self.iteration(t)
            self.graphs.append(g)

    def run(self, on_iteration=None, refine=(), start: int = 0) -> torch.Tensor:
        """The decode, then each re-masking pass (``refine``: (order, seeds) pairs) from ``start``."""
        self.tokens.zero_()
        its = self.key.iterations
        total, done = its + len(refine) * (its - start), 0
        for p in range(len(refine) + 1):
            if p:    # the pass's order and Philox keys into the static buffers; the tokens stay
                order, seeds = refine[p - 1]
                self.order.copy_(order.to(self.be.device), non_blocking=True)
                self.seeds.copy_(seeds.to(self.be.device), non_blocking=True)
            for t in range(start if p else 0, its):
                if self.graphs:
                    self.graphs[t].replay()
                else:
                    self.iteration(t)
                if on_iteration is not None:
                    on_iteration(done, total)
                done += 1
        return self.tokens.clone()

    def release(self):
        self.graphs.clear()
        self.pool = None
