"""The fused T̂-step DDPM sampler of the diffusion head, as one Triton kernel launch.

One launch runs the whole reverse process of one decoding iteration for all of its rows:

    x_T̂ = noise[0]
    for j = 0..T̂-1 (sampling index i = T̂-1-j):
        y      = c_emb + t_emb[i]                               (cond rows and uncond rows)
        ada    = SiLU(y) @ W_ada + b_ada                        (shift/scale/gate of every block + final)
        h      = x @ W_in + b_in
        per block: h += gate ⊙ (SiLU(modulate(LN(h)) @ W1 + b1) @ W2 + b2)
        out    = modulate(LN_noaffine(h)) @ W_f + b_f           → (ε, v)
        ε      = ε_u + β·(ε_c − ε_u)                            (CFG on ε only; v from cond rows)
        x      = coef_x[i]·x − coef_eps[i]·ε
                 (+ exp(½(lv_mid[i] + lv_half[i]·v))·noise[j+1]·temperature if i > 0)

Design (see docs/gpu.md):

* Grid (split, row_blocks). A program owns ``block_rows`` cond rows *and* their uncond rows:
  every weight tile it loads feeds two dots (cond, uncond). The ``split`` programs of one row
  block each compute 1/split of every layer's output columns and meet at grid barriers
  (an atomic counter per row block; ``split == 1`` needs only CTA barriers).
* State between layers lives in a small global scratch (L2-resident): the adaLN table [rows, 11w]
  (fp32), the residual stream h (fp32), LayerNorm partials (tile mean and M2, combined with
  Chan's formula, so LN needs no extra pass over h), SiLU(Linear1) (weight dtype), and a
  per-program staged A operand (weight dtype). x lives in the output tensor (fp32).
* Weights fp16 / bf16 (or fp32 for parity), accumulation and state fp32. Weights are packed
  K-major ([K, N], i.e. nn.Linear weights transposed); the kernel loops over K-tiles.
* Noise: injected [T̂, R, C] (parity mode) or Philox drawn in the kernel with per-sample keys read
  from device memory (see kernels/philox.py for the counter layout); β and the temperature are
  read from device memory too, so a CUDA graph replays with new seeds/guidance unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import os

import torch
import triton
import triton.language as tl
from triton.language.random import pair_uniform_to_normal, philox, uint_to_uniform_float

from impact_rt.cuda_graphs import FusedConfig, choose_config

# ---------------------------------------------------------------------------------------------
# Triton device code


@triton.jit
def _sync(bar_ptr, idx, SPLIT: tl.constexpr):
    """Barrier ``idx`` (0, 1, 2, ...) of the SPLIT programs of one row block."""
    tl.debug_barrier()
    if SPLIT > 1:
        target = (idx + 1) * SPLIT
        cur = tl.atomic_add(bar_ptr, 1, sem="acq_rel", scope="gpu") + 1
        while cur < target:
            cur = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()


@triton.jit
def _noise_tile(noise_ptr, seed_ptr, rows, rmask, ce, slot, R, stream, rows_per_seed,
                C: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, USE_PHILOX: tl.constexpr):
    """Noise of ``slot`` for rows × channels ``ce``: injected [T̂, R, C] or Philox (per-sample key)."""
    if USE_PHILOX:
        smp = rows // rows_per_seed
        q = rows - smp * rows_per_seed
        seed = tl.load(seed_ptr + smp, mask=rmask, other=0)
        key = seed[:, None] + tl.zeros([BR, BC], dtype=tl.int64)
        cnt = (slot * rows_per_seed + q)[:, None] * C + ce[None, :]
        c0 = cnt.to(tl.uint32)
        zero = c0 * 0
        c1 = (cnt * 0 + stream).to(tl.uint32)
        w0, w1, _, _ = philox(key, c0, c1, zero, zero)
        z, _ = pair_uniform_to_normal(uint_to_uniform_float(w0), uint_to_uniform_float(w1))
    else:
        z = tl.load(noise_ptr + (slot * R + rows)[:, None] * C + ce[None, :], mask=rmask[:, None], other=0.0)
    return z


@triton.jit
def _dot2(ac_ptr, au_ptr, lda, w_ptr, ldw, n, rmask,
          K: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
          HAS_UNCOND: tl.constexpr, PREC: tl.constexpr):
    """acc_c = A_c[BR, K] @ W[K, n], acc_u = A_u @ W: each weight tile is loaded once for both."""
    r = tl.arange(0, BR)
    acc_c = tl.zeros([BR, BN], dtype=tl.float32)
    acc_u = tl.zeros([BR, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        k = k0 + tl.arange(0, BK)
        wt = tl.load(w_ptr + k[:, None] * ldw + n[None, :])
        a = tl.load(ac_ptr + r[:, None] * lda + k[None, :], mask=rmask[:, None], other=0.0,
                    cache_modifier=".cg")
        acc_c = tl.dot(a.to(wt.dtype), wt, acc_c, input_precision=PREC)
        if HAS_UNCOND:
            a = tl.load(au_ptr + r[:, None] * lda + k[None, :], mask=rmask[:, None], other=0.0,
                        cache_modifier=".cg")
            acc_u = tl.dot(a.to(wt.dtype), wt, acc_u, input_precision=PREC)
    return acc_c, acc_u


@triton.jit
def _stage_y(c_ptr, temb_ptr, a_ptr, rmask, W: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr):
    """A ← SiLU(c_emb + t_emb[i]) (the adaLN input), in the weight dtype."""
    r = tl.arange(0, BR)
    for k0 in range(0, W, BK):
        k = k0 + tl.arange(0, BK)
        te = tl.load(temb_ptr + k)
        c = tl.load(c_ptr + r[:, None] * W + k[None, :], mask=rmask[:, None], other=0.0)
        y = c + te[None, :]
        y = y * tl.sigmoid(y)
        tl.store(a_ptr + r[:, None] * W + k[None, :], y.to(a_ptr.dtype.element_ty))


@triton.jit
def _write_partials(part_ptr, tn, h, BR: tl.constexpr, BN: tl.constexpr):
    """LayerNorm partials of one column tile: tile mean and M2 = Σ(h − mean)² per row."""
    r = tl.arange(0, BR)
    m = tl.sum(h, axis=1) / BN
    d = h - m[:, None]
    m2 = tl.sum(d * d, axis=1)
    tl.store(part_ptr + (tn * BR + r) * 2, m)
    tl.store(part_ptr + (tn * BR + r) * 2 + 1, m2)


@triton.jit
def _stage_ln(h_ptr, part_ptr, ada_ptr, shift_off, scale_off, lnw_ptr, lnb_ptr, a_ptr, rmask,
              ADA_N: tl.constexpr, W: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr,
              NT: tl.constexpr, BN: tl.constexpr, AFFINE: tl.constexpr):
    """A ← modulate(LayerNorm(h), shift, scale) for full rows (eps 1e-6), in the weight dtype.

    Every program of a row block reads whole rows of h and of the modulation here, so the loads
    are masked to the block's real rows: at batch 1 a 16-row block holds 4 (T = 64), and the padded
    rows' A (finite, never stored to x) would cost 4x the L2 traffic for nothing."""
    r = tl.arange(0, BR)
    t = tl.arange(0, NT)
    pidx = (t[:, None] * BR + r[None, :]) * 2
    pm = tl.load(part_ptr + pidx, cache_modifier=".cg")        # [NT, BR] tile means
    pq = tl.load(part_ptr + pidx + 1, cache_modifier=".cg")    # [NT, BR] tile M2
    mean = tl.sum(pm, axis=0) / NT
    dm = pm - mean[None, :]
    m2 = tl.sum(pq, axis=0) + BN * tl.sum(dm * dm, axis=0)     # Chan: equal tile counts
    rstd = 1.0 / tl.sqrt(m2 / W + 1e-6)
    for k0 in range(0, W, BK):
        k = k0 + tl.arange(0, BK)
        m = rmask[:, None]
        h = tl.load(h_ptr + r[:, None] * W + k[None, :], mask=m, other=0.0, cache_modifier=".cg")
        a = (h - mean[:, None]) * rstd[:, None]
        if AFFINE:
            a = a * tl.load(lnw_ptr + k)[None, :] + tl.load(lnb_ptr + k)[None, :]
        shift = tl.load(ada_ptr + r[:, None] * ADA_N + shift_off + k[None, :], mask=m, other=0.0,
                        cache_modifier=".cg")
        scale = tl.load(ada_ptr + r[:, None] * ADA_N + scale_off + k[None, :], mask=m, other=0.0,
                        cache_modifier=".cg")
        a = a * (1.0 + scale) + shift
        tl.store(a_ptr + r[:, None] * W + k[None, :], a.to(a_ptr.dtype.element_ty), mask=m)


@triton.jit
def _fused_sampler_kernel(
    x_ptr, cc_ptr, cu_ptr, temb_ptr, coef_ptr, noise_ptr, seed_ptr, guid_ptr, temp_ptr,
    win_ptr, bin_ptr, adaw_ptr, adab_ptr, lnw_ptr, lnb_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, wf_ptr, bf_ptr,
    ada_ptr, h_ptr, part_ptr, g_ptr, a_ptr, bar_ptr, adapre_ptr,
    R, STEPS, stream, rows_per_seed,
    C: tl.constexpr, W: tl.constexpr, DEPTH: tl.constexpr, ADA_N: tl.constexpr,
    HALVES: tl.constexpr, USE_PHILOX: tl.constexpr, SPLIT: tl.constexpr,
    BR: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr, BKC: tl.constexpr,
    PREC: tl.constexpr, ADA_PRE: tl.constexpr,
):
    HAS_UNCOND: tl.constexpr = HALVES == 2
    NT: tl.constexpr = W // BN
    NB: tl.constexpr = 2 + 2 * DEPTH            # grid barriers per sampling step
    pid_s = tl.program_id(0)
    rb = tl.program_id(1).to(tl.int64)
    r = tl.arange(0, BR)
    rows = rb * BR + r
    rmask = rows < R

    x_base = x_ptr + rb * BR * C
    cc_base = cc_ptr + rb * BR * W
    cu_base = cu_ptr + rb * BR * W
    ada_c = ada_ptr + rb * HALVES * BR * ADA_N
    ada_u = ada_c + (HALVES - 1) * BR * ADA_N
    h_c = h_ptr + rb * HALVES * BR * W
    h_u = h_c + (HALVES - 1) * BR * W
    g_c = g_ptr + rb * HALVES * BR * W
    g_u = g_c + (HALVES - 1) * BR * W
    part_c = part_ptr + rb * HALVES * NT * BR * 2
    part_u = part_c + (HALVES - 1) * NT * BR * 2
    a_c = a_ptr + (rb * SPLIT + pid_s) * HALVES * BR * W    # private to this program
    a_u = a_c + (HALVES - 1) * BR * W
    bar = bar_ptr + rb

    # x_T̂ = noise slot 0 (not scaled by the temperature).
    for c0_ in range(0, C, SPLIT * BC):     # this program's tiles: pid_s, pid_s + SPLIT, ...
        c0 = c0_ + pid_s * BC
        if c0 < C:
            ce = c0 + tl.arange(0, BC)
            z = _noise_tile(noise_ptr, seed_ptr, rows, rmask, ce, 0, R, stream, rows_per_seed, C, BR, BC, USE_PHILOX)
            tl.store(x_base + r[:, None] * C + ce[None, :], z, mask=rmask[:, None])
    _sync(bar, 0, SPLIT)

    beta = tl.load(guid_ptr)
    temperature = tl.load(temp_ptr)
    for j in range(STEPS):
        i = STEPS - 1 - j
        nb = 1 + j * NB
        # -- adaLN table (precomputed for every step, or computed here) and input projection -------
        if ADA_PRE:     # [T̂, row blocks, halves, BR, ADA_N], one GEMM before the launch
            ac = adapre_ptr + (i * tl.num_programs(1) + rb) * HALVES * BR * ADA_N
            au = ac + (HALVES - 1) * BR * ADA_N
        else:
            ac = ada_c
            au = ada_u
            _stage_y(cc_base, temb_ptr + i * W, a_c, rmask, W, BR, BK)
            if HAS_UNCOND:
                _stage_y(cu_base, temb_ptr + i * W, a_u, rmask, W, BR, BK)
            tl.debug_barrier()
            for n0_ in range(0, ADA_N, SPLIT * BN):     # this program's tiles: pid_s, pid_s + SPLIT, ...
                n0 = n0_ + pid_s * BN
                if n0 < ADA_N:
                    n = n0 + tl.arange(0, BN)
                    acc_c, acc_u = _dot2(a_c, a_u, W, adaw_ptr, ADA_N, n, rmask, W, BR, BN, BK, HAS_UNCOND, PREC)
                    bias = tl.load(adab_ptr + n)[None, :]
                    tl.store(ada_c + r[:, None] * ADA_N + n[None, :], acc_c + bias)
                    if HAS_UNCOND:
                        tl.store(ada_u + r[:, None] * ADA_N + n[None, :], acc_u + bias)
        for n0_ in range(0, W, SPLIT * BN):     # this program's tiles: pid_s, pid_s + SPLIT, ...
            n0 = n0_ + pid_s * BN
            if n0 < W:
                n = n0 + tl.arange(0, BN)
                acc, _ = _dot2(x_base, x_base, C, win_ptr, W, n, rmask, C, BR, BN, BKC, False, PREC)
                hh = acc + tl.load(bin_ptr + n)[None, :]
                tl.store(h_c + r[:, None] * W + n[None, :], hh)
                _write_partials(part_c, n0 // BN, hh, BR, BN)
                if HAS_UNCOND:
                    tl.store(h_u + r[:, None] * W + n[None, :], hh)
                    _write_partials(part_u, n0 // BN, hh, BR, BN)
        _sync(bar, nb, SPLIT)
        # -- ResBlocks -------------------------------------------------------------------------
        for blk in range(DEPTH):
            sh = blk * 3 * W
            _stage_ln(h_c, part_c, ac, sh, sh + W, lnw_ptr + blk * W, lnb_ptr + blk * W, a_c, rmask,
                      ADA_N, W, BR, BK, NT, BN, True)
            if HAS_UNCOND:
                _stage_ln(h_u, part_u, au, sh, sh + W, lnw_ptr + blk * W, lnb_ptr + blk * W, a_u, rmask,
                          ADA_N, W, BR, BK, NT, BN, True)
            tl.debug_barrier()
            for n0_ in range(0, W, SPLIT * BN):     # this program's tiles: pid_s, pid_s + SPLIT, ...
                n0 = n0_ + pid_s * BN
                if n0 < W:
                    n = n0 + tl.arange(0, BN)
                    acc_c, acc_u = _dot2(a_c, a_u, W, w1_ptr + blk * W * W, W, n, rmask, W, BR, BN, BK,
                                         HAS_UNCOND, PREC)
                    bias = tl.load(b1_ptr + blk * W + n)[None, :]
                    v = acc_c + bias
                    v = v * tl.sigmoid(v)
                    tl.store(g_c + r[:, None] * W + n[None, :], v.to(g_ptr.dtype.element_ty))
                    if HAS_UNCOND:
                        v = acc_u + bias
                        v = v * tl.sigmoid(v)
                        tl.store(g_u + r[:, None] * W + n[None, :], v.to(g_ptr.dtype.element_ty))
            _sync(bar, nb + 1 + 2 * blk, SPLIT)
            for n0_ in range(0, W, SPLIT * BN):     # this program's tiles: pid_s, pid_s + SPLIT, ...
                n0 = n0_ + pid_s * BN
                if n0 < W:
                    n = n0 + tl.arange(0, BN)
                    acc_c, acc_u = _dot2(g_c, g_u, W, w2_ptr + blk * W * W, W, n, rmask, W, BR, BN, BK,
                                         HAS_UNCOND, PREC)
                    bias = tl.load(b2_ptr + blk * W + n)[None, :]
                    offs = r[:, None] * W + n[None, :]
                    goff = r[:, None] * ADA_N + sh + 2 * W + n[None, :]
                    m = rmask[:, None]      # padded rows: h stays 0 (their A is never used)
                    gate = tl.load(ac + goff, mask=m, other=0.0, cache_modifier=".cg")
                    hh = tl.load(h_c + offs, mask=m, other=0.0, cache_modifier=".cg") + gate * (acc_c + bias)
                    tl.store(h_c + offs, hh)
                    _write_partials(part_c, n0 // BN, hh, BR, BN)
                    if HAS_UNCOND:
                        gate = tl.load(au + goff, mask=m, other=0.0, cache_modifier=".cg")
                        hh = tl.load(h_u + offs, mask=m, other=0.0, cache_modifier=".cg") + gate * (acc_u + bias)
                        tl.store(h_u + offs, hh)
                        _write_partials(part_u, n0 // BN, hh, BR, BN)
            _sync(bar, nb + 2 + 2 * blk, SPLIT)
        # -- final layer, CFG on ε, posterior step -------------------------------------------
        FSH: tl.constexpr = DEPTH * 3 * W
        _stage_ln(h_c, part_c, ac, FSH, FSH + W, lnw_ptr, lnb_ptr, a_c, rmask, ADA_N, W, BR, BK, NT, BN, False)
        if HAS_UNCOND:
            _stage_ln(h_u, part_u, au, FSH, FSH + W, lnw_ptr, lnb_ptr, a_u, rmask, ADA_N, W, BR, BK, NT, BN, False)
        tl.debug_barrier()
        coef_x = tl.load(coef_ptr + i * 4)
        coef_eps = tl.load(coef_ptr + i * 4 + 1)
        lv_mid = tl.load(coef_ptr + i * 4 + 2)
        lv_half = tl.load(coef_ptr + i * 4 + 3)
        for c0_ in range(0, C, SPLIT * BC):     # this program's tiles: pid_s, pid_s + SPLIT, ...
            c0 = c0_ + pid_s * BC
            if c0 < C:
                ce = c0 + tl.arange(0, BC)
                e_c, e_u = _dot2(a_c, a_u, W, wf_ptr, 2 * C, ce, rmask, W, BR, BC, BK, HAS_UNCOND, PREC)
                v_c, _ = _dot2(a_c, a_c, W, wf_ptr + C, 2 * C, ce, rmask, W, BR, BC, BK, False, PREC)
                eps = e_c + tl.load(bf_ptr + ce)[None, :]
                var = v_c + tl.load(bf_ptr + C + ce)[None, :]
                if HAS_UNCOND:
                    eps_u = e_u + tl.load(bf_ptr + ce)[None, :]
                    eps = eps_u + beta * (eps - eps_u)
                xoff = r[:, None] * C + ce[None, :]
                x = tl.load(x_base + xoff, mask=rmask[:, None], other=0.0, cache_modifier=".cg")
                x = coef_x * x - coef_eps * eps
                if i > 0:
                    z = _noise_tile(noise_ptr, seed_ptr, rows, rmask, ce, j + 1, R, stream, rows_per_seed,
                                    C, BR, BC, USE_PHILOX)
                    x = x + tl.exp(0.5 * (lv_mid + lv_half * var)) * (z * temperature)
                tl.store(x_base + xoff, x, mask=rmask[:, None])
        _sync(bar, nb + 1 + 2 * DEPTH, SPLIT)


@triton.jit
def _philox_noise_kernel(out_ptr, seed_ptr, R, stream, rows_per_seed,
                         C: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """Materialise the kernel's Philox noise [slots, R, C] (same device code as the sampler)."""
    slot = tl.program_id(0)
    rows = tl.program_id(1).to(tl.int64) * BR + tl.arange(0, BR)
    rmask = rows < R
    for c0 in range(0, C, BC):
        ce = c0 + tl.arange(0, BC)
        z = _noise_tile(out_ptr, seed_ptr, rows, rmask, ce, slot, R, stream, rows_per_seed, C, BR, BC, True)
        tl.store(out_ptr + (slot * R + rows)[:, None] * C + ce[None, :], z, mask=rmask[:, None])


# ---------------------------------------------------------------------------------------------
# Host side: packing, tables, launcher

@dataclass
class HeadWeights:
    """A DiffusionHead packed for the kernel: matrices K-major in the weight dtype, vectors fp32."""

    token_dim: int
    width: int
    depth: int
    w_in: torch.Tensor      # [C, w]
    b_in: torch.Tensor      # [w]
    ada_w: torch.Tensor     # [w, (3d+2)·w]   blocks' (shift|scale|gate), then final (shift|scale)
    ada_b: torch.Tensor     # [(3d+2)·w]
    ln_w: torch.Tensor      # [d, w]
    ln_b: torch.Tensor      # [d, w]
    w1: torch.Tensor        # [d, w, w]
    b1: torch.Tensor        # [d, w]
    w2: torch.Tensor        # [d, w, w]
    b2: torch.Tensor        # [d, w]
    wf: torch.Tensor        # [w, 2C]          (ε | v)
    bf: torch.Tensor        # [2C]

    NAMES = ("w_in", "b_in", "ada_w", "ada_b", "ln_w", "ln_b", "w1", "b1", "w2", "b2", "wf", "bf")

    @property
    def dtype(self) -> torch.dtype:
        return self.w1.dtype

    @property
    def device(self) -> torch.device:
        return self.w1.device

    @property
    def ada_n(self) -> int:
        return (3 * self.depth + 2) * self.width

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, n) for n in self.NAMES)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


@torch.no_grad()
def pack_head(head, dtype: torch.dtype = torch.float16, device=None) -> HeadWeights:
    """Pack a ``DiffusionHead`` for the kernel (weights in ``dtype``, K-major; vectors fp32)."""
    device = torch.device(device) if device is not None else next(head.parameters()).device

    def mat(w):   # nn.Linear weight [N, K] → [K, N] contiguous
        return w.detach().t().contiguous().to(device=device, dtype=dtype)

    def vec(v):
        return v.detach().contiguous().to(device=device, dtype=torch.float32)

    blocks = list(head.res_blocks)
    ada = [b.adaLN_modulation[1] for b in blocks] + [head.final_layer.adaLN_modulation[1]]
    return HeadWeights(
        token_dim=head.token_dim, width=head.input_proj.out_features, depth=len(blocks),
        w_in=mat(head.input_proj.weight), b_in=vec(head.input_proj.bias),
        ada_w=mat(torch.cat([m.weight for m in ada], 0)), ada_b=vec(torch.cat([m.bias for m in ada], 0)),
        ln_w=vec(torch.stack([b.in_ln.weight for b in blocks])), ln_b=vec(torch.stack([b.in_ln.bias for b in blocks])),
        w1=torch.stack([mat(b.mlp[0].weight) for b in blocks]), b1=vec(torch.stack([b.mlp[0].bias for b in blocks])),
        w2=torch.stack([mat(b.mlp[2].weight) for b in blocks]), b2=vec(torch.stack([b.mlp[2].bias for b in blocks])),
        wf=mat(head.final_layer.linear.weight), bf=vec(head.final_layer.linear.bias),
    )


@torch.no_grad()
def head_tables(head, tab: dict, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_emb [T̂, w], coefs [T̂, 4]) fp32, indexed by sampling index i; computed once per schedule.

    ``tab`` is ``ddpm.Schedule.tensors()``; coefs are (coef_x, coef_eps, logvar_mid, logvar_half).
    """
    p = next(head.parameters())
    device = torch.device(device) if device is not None else p.device
    t_emb = head.time_embed(tab["timestep_map"].to(p.device)).float().to(device).contiguous()
    coefs = torch.stack([tab[n].float() for n in ("coef_x", "coef_eps", "logvar_mid", "logvar_half")], 1)
    return t_emb, coefs.to(device).contiguous()


def _scalar_tensor(v, device) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.reshape(-1)[:1].to(device=device, dtype=torch.float32)
    return torch.full((1,), float(v), dtype=torch.float32, device=device)


def launch(weights: HeadWeights | tuple, c_cond: torch.Tensor, c_uncond: torch.Tensor | None,
           t_emb: torch.Tensor, coefs: torch.Tensor, noise: torch.Tensor | None, seeds: torch.Tensor | None,
           guidance: torch.Tensor, temperature: torch.Tensor, *, rows_per_seed: int = 1, stream: int = 0,
           config: FusedConfig | None = None, adaln_table: bool | None = None) -> torch.Tensor:
    """Launch the kernel directly (no custom op). Exactly one of ``noise`` / ``seeds`` is given.

    adaln_table: precompute the adaLN modulation of every step (``adaln_modulation_table``: one
    GEMM before the launch) instead of computing it inside the loop, where it is 11 of the head's
    17 w² weight matrices a step. Default (None): on where the split path runs (few rows) and the
    table stays under ``ADALN_TABLE_MAX_BYTES``; ``IMPACT_RT_ADALN_TABLE=0`` turns it off. On the
    H100 (session 5, docs/benchmarks.md) it made batch-1 decoding 13 % faster at T=64 and 4 % at T=8.

    c_cond / c_uncond [R, w] fp32: cond_embed(h) of the cond / uncond rows (c_uncond None: no CFG).
    noise [T̂, R, C] fp32 (injected) or seeds [B] int64 (Philox; R = B·rows_per_seed, sample-major).
    guidance / temperature: 1-element fp32 device tensors. Returns x_0 [R, C] fp32.
    """
    w = weights.tensors() if isinstance(weights, HeadWeights) else tuple(weights)
    w_in, b_in, ada_w, ada_b, ln_w, ln_b, w1, b1, w2, b2, wf, bf = w
    c_dim, width = w_in.shape
    depth = w1.shape[0]
    ada_n = ada_w.shape[1]
    steps = t_emb.shape[0]
    r = c_cond.shape[0]
    dev = c_cond.device
    if (noise is None) == (seeds is None):
        raise ValueError("fused_sample: give exactly one of injected noise or Philox seeds")
    if c_cond.shape != (r, width) or (c_uncond is not None and c_uncond.shape != (r, width)):
        raise ValueError(f"fused_sample: c_emb must be [R, {width}], got {tuple(c_cond.shape)}")
    if t_emb.shape != (steps, width) or coefs.shape != (steps, 4):
        raise ValueError("fused_sample: t_emb must be [T̂, w] and coefs [T̂, 4]")
    if noise is not None and noise.shape != (steps, r, c_dim):
        raise ValueError(f"fused_sample: noise must be [{steps}, {r}, {c_dim}], got {tuple(noise.shape)}")
    if seeds is not None and seeds.numel() * rows_per_seed != r:
        raise ValueError(f"fused_sample: {seeds.numel()} seeds × {rows_per_seed} rows != {r} rows")
    cfg = (config or choose_config(r, width, c_dim, _sm_count(dev))).validate(width, c_dim)
    halves = 1 if c_uncond is None else 2
    rb = cfg.row_blocks(r)
    br, nt = cfg.block_rows, width // cfg.block_n
    f32 = dict(device=dev, dtype=torch.float32)
    ada = torch.empty((rb, halves, br, ada_n), **f32)
    h = torch.empty((rb, halves, br, width), **f32)
    part = torch.empty((rb, halves, nt, br, 2), **f32)
    g = torch.empty((rb, halves, br, width), device=dev, dtype=w1.dtype)
    a = torch.empty((rb, cfg.split, halves, br, width), device=dev, dtype=w1.dtype)
    bar = torch.zeros((rb,), device=dev, dtype=torch.int32)
    table_bytes = steps * rb * halves * br * ada_n * 4
    if adaln_table is None:   # on by default since measured on the H100; IMPACT_RT_ADALN_TABLE=0 turns it off
        adaln_table = cfg.split > 1 and adaln_table_wanted(table_bytes)
    ada_pre = (adaln_modulation_table(ada_w, ada_b, c_cond.float(), None if c_uncond is None else c_uncond.float(),
                                      t_emb.float(), rb, br) if adaln_table else ada)
    x = torch.empty((r, c_dim), **f32)
    c_cond = c_cond.float().contiguous()
    c_uncond = c_cond if c_uncond is None else c_uncond.float().contiguous()
    noise_t = x if noise is None else noise.float().contiguous()
    seeds_t = bar if seeds is None else seeds.to(torch.int64).contiguous()
    prec = "ieee" if w1.dtype == torch.float32 else "tf32"
    _fused_sampler_kernel[(cfg.split, rb)](
        x, c_cond, c_uncond, t_emb.float().contiguous(), coefs.float().contiguous(), noise_t, seeds_t,
        guidance, temperature,
        w_in, b_in, ada_w, ada_b, ln_w, ln_b, w1, b1, w2, b2, wf, bf,
        ada, h, part, g, a, bar, ada_pre,
        r, steps, stream, rows_per_seed,
        C=c_dim, W=width, DEPTH=depth, ADA_N=ada_n, HALVES=halves, USE_PHILOX=seeds is not None,
        SPLIT=cfg.split, BR=br, BN=cfg.block_n, BK=cfg.block_k, BC=cfg.block_c, BKC=min(cfg.block_k, c_dim),
        PREC=prec, ADA_PRE=bool(adaln_table), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return x


ADALN_TABLE_MAX_BYTES = 256 << 20


def adaln_table_wanted(nbytes: int, on: bool | None = None) -> bool:
    """Whether to precompute an adaLN table of ``nbytes``: ``on`` (None: the IMPACT_RT_ADALN_TABLE
    switch, on unless "0") and within ``ADALN_TABLE_MAX_BYTES``. The kernel and the GEMM path ask."""
    if on is None:
        on = os.environ.get("IMPACT_RT_ADALN_TABLE", "1") != "0"
    return bool(on) and nbytes <= ADALN_TABLE_MAX_BYTES


def adaln_modulation_table(ada_w: torch.Tensor, ada_b: torch.Tensor, c_cond: torch.Tensor,
                           c_uncond: torch.Tensor | None, t_emb: torch.Tensor, row_blocks: int,
                           block_rows: int) -> torch.Tensor:
    """Every step's adaLN modulation, Linear(SiLU(c_emb + t_emb[i])), for all rows at once.

    It depends on the step and the row's condition, never on x, so the T̂ steps' worth is one GEMM
    ([T̂·rows, w] @ [w, (3d+2)·w], in the weight dtype with fp32 output) instead of T̂ passes
    over the adaLN weights inside the loop. Layout [T̂, row blocks, halves, block_rows, (3d+2)·w]
    fp32: the kernel's per-step scratch layout, rows padded to whole blocks."""
    halves = 1 if c_uncond is None else 2
    r, w = c_cond.shape
    c = c_cond[None] if c_uncond is None else torch.stack([c_cond, c_uncond])        # [H, R, w]
    c = torch.nn.functional.pad(c, (0, 0, 0, row_blocks * block_rows - r))
    c = c.reshape(halves, row_blocks, block_rows, w).transpose(0, 1)                 # [RB, H, BR, w]
    y = torch.nn.functional.silu(c[None] + t_emb[:, None, None, None, :])          # [T̂, RB, H, BR, w]
    out = torch.matmul(y.to(ada_w.dtype), ada_w).float() + ada_b
    return out.contiguous()


def fused_sample(head_weights: HeadWeights, c_emb_cond: torch.Tensor, c_emb_uncond: torch.Tensor | None,
                 t_emb_table: torch.Tensor, coefs: torch.Tensor, noise_or_seed: torch.Tensor,
                 guidance, temperature, *, rows_per_seed: int | None = None, stream: int = 0,
                 config: FusedConfig | None = None, use_custom_op: bool = True,
                 adaln_table: bool | None = None) -> torch.Tensor:
    """The whole T̂-step sampler of one decoding iteration → x_0 [R, C] fp32.

    ``noise_or_seed``: a floating tensor [T̂, R, C] (injected noise, the layout of
    ``impact_rt.sampler.sample_head``) or an integer tensor [B] of per-sample Philox seeds
    (rows are sample-major, ``rows_per_seed`` = R / B by default; ``stream`` = decoding iteration).
    ``guidance`` / ``temperature``: floats or 1-element device tensors (tensors: graph-safe).
    Goes through the ``impact_rt::fused_sample`` custom op unless ``use_custom_op`` is False.
    """
    dev = c_emb_cond.device
    r = c_emb_cond.shape[0]
    if noise_or_seed.is_floating_point():
        noise, seeds, rps = noise_or_seed, None, 1
    else:
        noise, seeds = None, noise_or_seed
        rps = rows_per_seed if rows_per_seed is not None else max(1, r // max(1, seeds.numel()))
    cfg = config or choose_config(r, head_weights.width, head_weights.token_dim, _sm_count(dev))
    g, t = _scalar_tensor(guidance, dev), _scalar_tensor(temperature, dev)
    if not use_custom_op:
        return launch(head_weights, c_emb_cond, c_emb_uncond, t_emb_table, coefs, noise, seeds, g, t,
                      rows_per_seed=rps, stream=stream, config=cfg, adaln_table=adaln_table)
    from .custom_op import fused_sample_op
    return fused_sample_op(*head_weights.tensors(), c_emb_cond, c_emb_uncond, t_emb_table, coefs, noise, seeds,
                           g, t, rps, stream, cfg.block_rows, cfg.block_n, cfg.block_k, cfg.block_c, cfg.split,
                           cfg.num_warps, cfg.num_stages, -1 if adaln_table is None else int(adaln_table))


def philox_noise(seeds: torch.Tensor, rows_per_seed: int, steps: int, token_dim: int, stream: int = 0,
                 block_rows: int = 16, block_c: int = 32) -> torch.Tensor:
    """The noise [T̂, R, C] the kernel draws in Philox mode (for parity tests and debugging)."""
    seeds = seeds.to(torch.int64).contiguous()
    r = seeds.numel() * rows_per_seed
    out = torch.empty((steps, r, token_dim), device=seeds.device, dtype=torch.float32)
    bc = min(block_c, token_dim)
    _philox_noise_kernel[(steps, triton.cdiv(r, block_rows))](out, seeds, r, stream, rows_per_seed,
                                                               C=token_dim, BR=block_rows, BC=bc)
    return out


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation (no GPU needed): catches GPU-compile errors on CPU-only machines.

_PTR = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}


def compile_for_arch(arch: int = 90, *, dtype: torch.dtype = torch.float16, philox: bool = True,
                     cfg_guidance: bool = True, token_dim: int = 128, width: int = 1024, depth: int = 3,
                     config: FusedConfig | None = None, adaln_table: bool = False):
    """Compile the sampler kernel to a cubin for sm_<arch> without a GPU (Triton + its ptxas).

    Returns the compiled kernel (``.asm['ptx']``, ``.asm['cubin']``, ``.metadata``). Must run in a
    process where TRITON_INTERPRET is not set.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if not hasattr(_fused_sampler_kernel, "arg_names") or type(_fused_sampler_kernel).__name__ != "JITFunction":
        raise RuntimeError("compile_for_arch needs compiled Triton (unset TRITON_INTERPRET)")
    cfg = (config or FusedConfig()).validate(width, token_dim)
    w = _PTR[dtype]
    types = dict(seed_ptr="*i64" if philox else "*i32", win_ptr=w, adaw_ptr=w, w1_ptr=w, w2_ptr=w, wf_ptr=w,
                 g_ptr=w, a_ptr=w, bar_ptr="*i32", R="i32", STEPS="i32", stream="i32", rows_per_seed="i32")
    constexprs = dict(C=token_dim, W=width, DEPTH=depth, ADA_N=(3 * depth + 2) * width,
                      HALVES=2 if cfg_guidance else 1, USE_PHILOX=philox, SPLIT=cfg.split, BR=cfg.block_rows,
                      BN=cfg.block_n, BK=cfg.block_k, BC=cfg.block_c, BKC=min(cfg.block_k, token_dim),
                      PREC="ieee" if dtype == torch.float32 else "tf32", ADA_PRE=adaln_table)
    sig = {n: ("constexpr" if n in constexprs else types.get(n, "*fp32")) for n in _fused_sampler_kernel.arg_names}
    src = ASTSource(_fused_sampler_kernel, sig, constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))


if __name__ == "__main__":   # python -m kernels.fused_sampler [arch]: AOT-compile the main configurations
    import sys
    arch = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    for dt, split, br in ((torch.float16, 1, 16), (torch.float16, 16, 16), (torch.bfloat16, 1, 64),
                          (torch.float32, 1, 16)):
        k = compile_for_arch(arch, dtype=dt, config=FusedConfig(block_rows=br, split=split,
                                                               num_warps=4 if br <= 16 else 8))
        print(f"sm_{arch} {str(dt).split('.')[-1]} split={split} block_rows={br}: ok, "
              f"{len(k.asm['cubin'])} bytes of cubin, shared {k.metadata.shared} B", flush=True)
