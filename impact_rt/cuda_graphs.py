"""Buffer plans, capture keys and launch configurations of the ``cuda`` backend (issue 6).

Pure Python (no CUDA, no Triton): everything here is decided before a CUDA graph is captured,
and is unit-tested on CPU.

* ``CaptureKey`` — what a captured decoding loop depends on: (batch, T, T̂, CFG on/off, precision,
  model geometry). β_max, the temperature, the seeds, the prompts and the decoding order are
  *data* in static device buffers, so changing them needs no recapture.
* ``DecodePlan`` — per-iteration static slices of the decoding order (visible / predicted), the
  number of head rows, the Philox stream id, and the fused-sampler launch configuration.
* ``buffer_plan`` — the static device buffers one captured loop owns (shapes, dtypes, bytes).
* ``FusedConfig`` / ``choose_config`` — tile sizes and the column split of the fused sampler.
* ``GraphCache`` — a small LRU of captured loops keyed by ``CaptureKey``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from .config import ConfigError, DecodeConfig, ModelConfig
from .mask_schedule import MaskPlan, guidance_schedule

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int64": 8, "int32": 4, "bool": 1}
PHILOX_COUNTER_LIMIT = 2 ** 32  # counter word 0 of the in-kernel Philox stream is 32-bit


# ---------------------------------------------------------------------------------------------
# Fused sampler launch configuration

@dataclass(frozen=True)
class FusedConfig:
    """Launch configuration of the fused T̂-step sampler kernel (kernels/fused_sampler.py).

    block_rows: cond rows per program (its uncond rows come along: 2·block_rows rows per dot).
    block_n / block_k: output-column and reduction tiles of the w-wide layers.
    block_c: output-column tile of the final layer (over the token dim C).
    split: programs that share one row block, each computing 1/split of every layer's columns;
        they meet at grid barriers (atomics), so all programs must be co-resident (split > 1 only
        when rows are few; see ``choose_config``).
    """

    block_rows: int = 16
    block_n: int = 64
    block_k: int = 64
    block_c: int = 32
    split: int = 1
    num_warps: int = 4
    num_stages: int = 2

    def validate(self, width: int, token_dim: int) -> "FusedConfig":
        def pow2(v):
            return v > 0 and v & (v - 1) == 0
        for name in ("block_rows", "block_n", "block_k", "block_c", "split", "num_warps"):
            if not pow2(getattr(self, name)):
                raise ConfigError(f"fused sampler: {name} must be a power of two, got {getattr(self, name)}")
        if width % self.block_n or width % self.block_k:
            raise ConfigError(f"fused sampler: width {width} must be a multiple of block_n {self.block_n} "
                              f"and block_k {self.block_k}")
        if not pow2(width // self.block_n):
            raise ConfigError(f"fused sampler: width / block_n = {width // self.block_n} must be a power of two")
        if token_dim % self.block_c:
            raise ConfigError(f"fused sampler: token dim {token_dim} must be a multiple of block_c {self.block_c}")
        if token_dim % min(self.block_k, token_dim):
            raise ConfigError(f"fused sampler: token dim {token_dim} must be a multiple of min(block_k, C)")
        if self.num_stages < 1:
            raise ConfigError("fused sampler: num_stages must be >= 1")
        return self

    def row_blocks(self, rows: int) -> int:
        return max(1, math.ceil(rows / self.block_rows))

    def programs(self, rows: int) -> int:
        return self.row_blocks(rows) * self.split


def _largest_pow2_at_most(v: int) -> int:
    return 1 << (max(1, v).bit_length() - 1)


def choose_config(rows: int, width: int, token_dim: int, sm_count: int = 1, *,
                  block_rows: int | None = None, max_split: int | None = None) -> FusedConfig:
    """A launch configuration for ``rows`` cond rows (their uncond rows come along).

    Few rows (small batch): weight traffic dominates and one program per row block would read
    the whole head from L2 at every step, so the columns are split over ``split`` programs per
    row block (grid ≤ SM count, so that the grid barriers cannot deadlock; ``max_split`` caps it,
    ``max_split=1`` turns the grid barriers off). Many rows: one
    program per row block, larger row blocks for more weight reuse per K-tile.
    Defaults from ``kernels/bench_fused_sampler.py --sweep`` on an H100 (base head, fp16, T̂ = 100;
    docs/benchmarks.md): 4 rows, split 32 × block_n 32 with block_k 256 and 3 stages ran 14.9 ms
    against 29.2 ms for split 16 × 64 × 64, 2 stages; 4096 rows, block_n 128, block_k 64, 4 warps,
    3 stages ran 178 ms against 469 ms for 64 / 64 / 8 warps / 2 stages.
    """
    if rows <= 0:
        raise ConfigError(f"fused sampler: rows must be positive, got {rows}")
    bc = min(32, token_dim)
    if block_rows is None:
        block_rows = 16 if rows <= 16 * max(1, sm_count) else (32 if rows <= 32 * max(1, sm_count) else 64)
    blocks = -(-rows // block_rows)
    if sm_count > 1 and blocks * 2 <= sm_count:       # few rows: split the columns, stream long K tiles
        bn, bk = min(32, width), min(256, width)
        split = min(width // bn, _largest_pow2_at_most(sm_count // blocks))
        if max_split is not None:
            split = min(split, _largest_pow2_at_most(max(1, max_split)))
        cfg = FusedConfig(block_rows, bn, bk, bc, split, 4, 3)
    else:                                             # many rows: one program per row block
        cfg = FusedConfig(block_rows, min(128, width), min(64, width), bc, 1, 4 if block_rows <= 32 else 8, 3)
    return cfg.validate(width, token_dim)


def scratch_bytes(rows: int, width: int, depth: int, cfg: FusedConfig, cfg_guidance: bool,
                  weight_bytes: int = 2) -> int:
    """Device scratch one fused-sampler launch allocates (adaLN table, hidden state, partials...)."""
    halves = 2 if cfg_guidance else 1
    rb, br = cfg.row_blocks(rows), cfg.block_rows
    ada_n = (3 * depth + 2) * width
    nt = width // cfg.block_n
    return (rb * halves * br * ada_n * 4            # adaLN shift/scale/gate, fp32
            + rb * halves * br * width * 4          # residual stream h, fp32
            + rb * halves * nt * br * 2 * 4         # LayerNorm partials (mean, M2) per column tile
            + rb * halves * br * width * weight_bytes          # SiLU(Linear1) output
            + rb * cfg.split * halves * br * width * weight_bytes  # per-program staged A operand
            + rb * 4)                               # barrier counters


# ---------------------------------------------------------------------------------------------
# Capture keys and decode plans

@dataclass(frozen=True)
class CaptureKey:
    """What a captured decoding loop depends on. Everything else is data in static buffers."""

    batch: int
    iterations: int
    diffusion_steps: int
    cfg: bool
    precision: str
    num_tokens: int
    token_dim: int

    @classmethod
    def build(cls, batch: int, dc: DecodeConfig, model_cfg: ModelConfig, precision: str) -> "CaptureKey":
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if batch < 1:
            raise ConfigError(f"batch must be positive, got {batch}")
        dc.validate(model_cfg.num_tokens, model_cfg.train_steps)
        return cls(batch, dc.iterations, dc.diffusion_steps, dc.guidance != 1.0, precision,
                   model_cfg.num_tokens, model_cfg.token_dim)


@dataclass(frozen=True)
class IterationPlan:
    """Decoding iteration t: static slices of the per-sample order and the head's rows."""

    t: int
    visible_start: int      # order[:, visible_start:] are visible before iteration t
    predicted_start: int    # order[:, predicted_start:predicted_stop] are decoded at t
    predicted_stop: int
    batch: int
    config: FusedConfig

    @property
    def predicted(self) -> int:
        return self.predicted_stop - self.predicted_start

    @property
    def rows(self) -> int:
        """Cond rows of the head at this iteration (uncond rows double it inside the kernel)."""
        return self.batch * self.predicted

    @property
    def stream(self) -> int:
        """Philox counter word 1: the iteration index (each iteration draws a fresh stream)."""
        return self.t


@dataclass(frozen=True)
class DecodePlan:
    key: CaptureKey
    iterations: tuple[IterationPlan, ...]
    guidance: tuple[float, ...] = field(default=())

    @classmethod
    def build(cls, key: CaptureKey, guidance_max: float = 1.0, width: int = 1024, sm_count: int = 1,
              config_override: FusedConfig | None = None, max_split: int | None = None) -> "DecodePlan":
        plan = MaskPlan.build(key.num_tokens, key.iterations)
        its = []
        for t in range(key.iterations):
            s = plan.predicted_slice(t)
            rows = key.batch * (s.stop - s.start)
            cfg = config_override
            if cfg is None or (cfg.split > 1 and cfg.programs(rows) > sm_count):
                # an override whose grid barriers could not all be resident at this row count gives way
                cfg = choose_config(rows, width, key.token_dim, sm_count, max_split=max_split)
            cfg.validate(width, key.token_dim)
            counter_span = key.diffusion_steps * (s.stop - s.start) * key.token_dim
            if counter_span >= PHILOX_COUNTER_LIMIT:
                raise ConfigError(f"Philox counter span {counter_span} exceeds 2^32 at iteration {t}")
            its.append(IterationPlan(t, plan.visible_slice(t).start, s.start, s.stop, key.batch, cfg))
        return cls(key, tuple(its), tuple(guidance_schedule(key.iterations, guidance_max)))

    def visible(self, t: int) -> int:
        return self.key.num_tokens - self.iterations[t].visible_start

    @property
    def max_rows(self) -> int:
        return max(it.rows for it in self.iterations)

    def total_rows(self) -> int:
        """Cond head rows over the whole loop: B·N whatever T is."""
        return sum(it.rows for it in self.iterations)


# ---------------------------------------------------------------------------------------------
# Static buffers

@dataclass(frozen=True)
class BufferSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str              # "fp32" | "fp16" | "bf16" | "int64" | "bool"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def buffer_plan(key: CaptureKey, model_cfg: ModelConfig) -> list[BufferSpec]:
    """The static device buffers of one captured decoding loop (inputs, state, tables)."""
    b, n, c = key.batch, key.num_tokens, key.token_dim
    enc_b = 2 * b if key.cfg else b
    act = key.precision
    return [
        BufferSpec("cond", (enc_b, model_cfg.text_len, model_cfg.dim), act),   # cond ⊕ null condition
        BufferSpec("cond_mask", (enc_b, model_cfg.text_len), "bool"),
        BufferSpec("order", (b, n), "int64"),                                 # per-sample decoding order
        BufferSpec("seeds", (b,), "int64"),                                   # Philox key per sample
        BufferSpec("guidance", (key.iterations,), "fp32"),                    # β(t), read on device
        BufferSpec("temperature", (1,), "fp32"),
        BufferSpec("tokens", (b, n, c), "fp32"),                              # the loop state / output
        BufferSpec("t_emb", (key.diffusion_steps, model_cfg.head_width), "fp32"),
        BufferSpec("coefs", (key.diffusion_steps, 4), "fp32"),
    ]


def plan_bytes(key: CaptureKey, model_cfg: ModelConfig, plan: DecodePlan | None = None) -> dict:
    """Static buffer bytes and the largest per-iteration fused-sampler scratch (graph pool)."""
    static = sum(s.nbytes for s in buffer_plan(key, model_cfg))
    out = {"static": static}
    if plan is not None:
        wb = DTYPE_BYTES[key.precision]
        out["max_scratch"] = max(scratch_bytes(it.rows, model_cfg.head_width, model_cfg.head_depth,
                                               it.config, key.cfg, wb) for it in plan.iterations)
    return out


# ---------------------------------------------------------------------------------------------
# Cache of captured loops

class GraphCache:
    """LRU of captured decoding loops. Evicted entries get ``release()`` called if they have one."""

    def __init__(self, max_entries: int = 8):
        if max_entries < 1:
            raise ConfigError("graph cache needs at least one entry")
        self.max_entries = max_entries
        self._d: OrderedDict = OrderedDict()
        self.captures = 0
        self.hits = 0

    def __contains__(self, key) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key):
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            return self._d[key]
        return None

    def put(self, key, value):
        old = self._d.get(key)
        if old is not None and old is not value and hasattr(old, "release"):
            old.release()
        self._d[key] = value
        self._d.move_to_end(key)
        self.captures += 1
        while len(self._d) > self.max_entries:
            _, old = self._d.popitem(last=False)
            if hasattr(old, "release"):
                old.release()
        return value

    def clear(self):
        for v in self._d.values():
            if hasattr(v, "release"):
                v.release()
        self._d.clear()
