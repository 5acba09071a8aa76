"""The diffusion head's DDPM sampling as 2 + 2d Triton launches per step (8 for the base head, d = 3).

For few rows (batch 1: 4–64 cond rows an iteration) a sampling step is latency bound: the head's
weights (≈ 6w² MACs a row once the adaLN modulations are a table) are read from L2 by a handful of
SMs, and what costs is the number of dependent steps. The GEMM path (``CudaBackend.sample_gemm``,
inductor + CUDA graph) runs ~15–20 kernels a step; the single-launch fused kernel
(kernels/fused_sampler.py) has 8 grid barriers a step and is slower. Here the kernel boundaries
are the barriers: one launch per layer, each spread over the layer's output columns, no atomics
and no spinning, to be captured in a CUDA graph by the caller.

Per sampling step j (sampling index i = T̂-1-j), with CFG the 2R rows are the R cond rows then
the R uncond rows (both with the cond row's x):

    launch 1        h = [x; x] @ W_in + b_in                            grid (w / block_n, row blocks)
    per block k:
      launch 2k+2   u = SiLU(modulate(LN(h), shift_k, scale_k) @ W1_k + b1_k)
      launch 2k+3   h += gate_k ⊙ (u @ W2_k + b2_k)                     (in place, own column tile)
    launch 2d+2     ε, v = modulate(LN_noaffine(h), shift_f, scale_f) @ W_f + b_f,
                    ε = ε_u + β·(ε_c − ε_u),
                    x = coef_x·x − coef_ε·ε (+ exp(½(lv_mid + lv_half·v))·z·temperature if i > 0)

* Every launch's grid is (column tiles, row blocks). A program of launches 1..2d+1 owns
  ``block_n`` output columns of ``block_rows`` rows (cond and uncond rows alike); at batch 1 all
  rows of an iteration (≤ 32 cond + uncond rows) are one row block, and w = 1024 in 16-column
  tiles gives 64 programs a layer, each streaming its own slice of the weights from L2. A program
  of the final launch owns ``block_c`` token channels (its ε and its v columns) of block_rows / 2
  cond rows *and* their uncond rows, stacked in one A tile, so each weight tile feeds one dot for
  both halves; the halves are split apart for the guidance at the end.
* LayerNorm needs whole rows, which no program of the previous launch had: each program of a
  launch that starts with LN recomputes its rows' statistics over the full width from h (one
  pass, tile means and M2 combined with Chan's formula), then normalises, applies the affine
  and the modulation tile by tile as the A operand of its GEMM; the loads of the next A tile are
  issued before the current one is used (prefetch through registers). For ≤ 32 rows that is a
  128 KB read from L2, cheaper than another launch.
* The adaLN modulations do not depend on x, so all T̂ steps' are one table [T̂, rows, (3d+2)·w]
  built before the loop (``modulation_table``; in the weight dtype, as the GEMM path's
  ``head.modulations``); a launch reads its step's slice through a pointer offset (``mods[i]``).
  The step index i is a Python int fixed per captured graph; β and the temperature are read from
  device memory, so a graph replays with new values.
* State: h [2R, w] fp32 (the residual stream, updated in place: each program of launch 2k+3 owns a
  column tile of it), u [2R, w] in the weight dtype (it is cast to that for the GEMM anyway), x
  [R, C] fp32 (updated in place by the final launch, which owns a tile of C columns for its rows).
  ``step_scratch`` preallocates h and u, so a captured graph has static memory.
* Weights fp16 / bf16, or fp32 for parity (``input_precision="ieee"``), packed K-major by
  ``kernels.fused_sampler.pack_head``; accumulation, LayerNorm, the modulation and the update fp32.

Noise is injected ([T̂, R, C], the layout of ``impact_rt.sampler.sample_head``: slot 0 is x_T̂,
slot j+1 the noise added after position j); for the kernel's Philox stream use
``kernels.fused_sampler.philox_noise`` (one launch per iteration, outside the step).

Measured (H200, torch 2.11, Triton 3.6; w 1024, d 3, C 128, T̂ 100, R 4 + CFG, fp16, the whole
loop in one CUDA graph): 53.0 µs per sampling step with the default ``StepConfig`` (block_n 16,
block_k 256, block_c 32), next to 44.3 µs for the GEMM path's step compiled by inductor and
101.7 µs for the eager loop in a graph, on the same machine. Per launch (each repeated in a graph,
so the gap between dependent kernels is included): input projection 2.0 µs, block GEMM2 4.0 µs,
block LN+GEMM1 9.3 µs, final 9.7 µs. The LayerNorm prologue costs ~5 µs a launch: the target of
≤ 30 µs a step needs it cheaper (ideas: LN partials written by the producing launch as the fused
sampler does — ``StepConfig(ln_partials=True)``; the affine and (1 + scale) folded into the table).
H100, session 13 (same bench): default 54.0 µs, ``ln_partials`` 51.2 µs, ``pdl`` 58.8 µs, both
53.7 µs, against 47.1 µs for the inductor step (docs/benchmarks.md). The block launches lose on
their GEMM part (4 dependent K tiles per program at batch 1, where cuBLAS splits K; the final
launch has only 4 programs): ``StepConfig(split_k=N)`` splits it (``_splitk_total``), written
after that lease, untimed. block_k 64 → 256 took the step from 78 to 55 µs (fewer dependent K iterations); the register prefetch and the stacked
cond/uncond tile took the final launch from 13.4 to 11.6 µs (block_c 16) but the LN+GEMM1 launch
from 8.6 to 9.3 µs.

``python -m kernels.step_kernels --bench`` times it on a GPU; ``--compile [arch]`` compiles every
kernel for sm_<arch> without a GPU (``compile_step_kernels_for_arch``).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.fused_sampler import _PTR, HeadWeights, head_tables, pack_head

# ---------------------------------------------------------------------------------------------
# Triton device code


@triton.jit
def _row_stats(h_ptr, rows, rmask, W: tl.constexpr, BR: tl.constexpr, BL: tl.constexpr):
    """Mean and 1/sqrt(var + 1e-6) of full rows of h [*, W] (fp32), in one pass over W: tile mean
    and M2 per ``BL`` columns, combined with Chan's formula."""
    mean = tl.zeros([BR], dtype=tl.float32)
    m2 = tl.zeros([BR], dtype=tl.float32)
    for k0 in tl.static_range(0, W, BL):
        k = k0 + tl.arange(0, BL)
        t = tl.load(h_ptr + rows[:, None] * W + k[None, :], mask=rmask[:, None], other=0.0)
        tm = tl.sum(t, axis=1) / BL
        d = t - tm[:, None]
        delta = tm - mean
        mean = mean + delta * (BL / (k0 + BL))
        m2 = m2 + tl.sum(d * d, axis=1) + delta * delta * (k0 * BL / (k0 + BL))
    rstd = 1.0 / tl.sqrt(m2 / W + 1e-6)
    return mean, rstd


@triton.jit
def _store_partials(stats_ptr, h, rows, rmask, tile, NT: tl.constexpr, BN: tl.constexpr):
    """LayerNorm partials of one column tile of h (the ``BN`` columns of tile ``tile``): its mean
    and M2 per row, into stats [rows, 2·NT] (means in [0, NT), M2s in [NT, 2·NT)), written by the
    launch that produces h, so the next LayerNorm needs no pass over the full rows."""
    tm = tl.sum(h, axis=1) / BN
    d = h - tm[:, None]
    off = rows * (2 * NT) + tile
    tl.store(stats_ptr + off, tm, mask=rmask)
    tl.store(stats_ptr + off + NT, tl.sum(d * d, axis=1), mask=rmask)


@triton.jit
def _row_stats_partials(stats_ptr, rows, rmask, W: tl.constexpr, NT: tl.constexpr):
    """Mean and 1/sqrt(var + 1e-6) of full rows from their NT tiles' partials (Chan's formula for
    equal-size tiles: M2 = Σ M2_t + (W/NT)·Σ (mean_t − mean)²): one load of 2·NT values a row."""
    t = tl.arange(0, NT)
    off = rows[:, None] * (2 * NT) + t[None, :]
    tm = tl.load(stats_ptr + off, mask=rmask[:, None], other=0.0)
    m2 = tl.load(stats_ptr + off + NT, mask=rmask[:, None], other=0.0)
    mean = tl.sum(tm, axis=1) / NT
    d = tm - mean[:, None]
    var = (tl.sum(m2, axis=1) + (W // NT) * tl.sum(d * d, axis=1)) / W
    return mean, 1.0 / tl.sqrt(var + 1e-6)


@triton.jit
def _pdl_enter(PDL: tl.constexpr):
    """With programmatic dependent launch (PDL 1 or 2, ``StepConfig.pdl``): wait until the previous launch of
    the stream has completed and its writes are visible (griddepcontrol.wait), then let the next
    launch start (griddepcontrol.launch_dependents), so that its programs are resident and have
    issued their weight loads by the time this launch ends. Only weights (written by no launch of
    the graph) may be read before this call. Nothing without PDL."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _ln_tile_load(h_ptr, mod_ptr, lnw_ptr, lnb_ptr, rows, rmask, k,
                  W: tl.constexpr, ADA_N: tl.constexpr, AFFINE: tl.constexpr):
    """The loads behind one A tile of modulate(LN(h), shift, scale) for columns ``k``: h, shift,
    scale and the LayerNorm affine. Separate from ``_ln_tile`` so that the K loops can issue the
    next tile's loads before they work on the current one (prefetch through registers).

    ``mod_ptr`` points at this layer's shift in the step's modulation table (scale follows at +W)."""
    m = rmask[:, None]
    h = tl.load(h_ptr + rows[:, None] * W + k[None, :], mask=m, other=0.0)
    shift = tl.load(mod_ptr + rows[:, None] * ADA_N + k[None, :], mask=m, other=0.0)
    scale = tl.load(mod_ptr + rows[:, None] * ADA_N + W + k[None, :], mask=m, other=0.0)
    if AFFINE:
        lw = tl.load(lnw_ptr + k)
        lb = tl.load(lnb_ptr + k)
    else:
        lw = tl.full(k.shape, 1.0, tl.float32)
        lb = tl.zeros(k.shape, tl.float32)
    return h, shift, scale, lw, lb


@triton.jit
def _ln_tile(h, shift, scale, lw, lb, mean, rstd, AFFINE: tl.constexpr):
    """modulate(LN(h), shift, scale) = shift + LN(h)·(1 + scale) for loaded tiles (fp32)."""
    a = (h - mean[:, None]) * rstd[:, None]
    if AFFINE:
        a = a * lw[None, :] + lb[None, :]
    return shift.to(tl.float32) + a * (1.0 + scale.to(tl.float32))


@triton.jit
def _ln_gemm(h_ptr, mod_ptr, lnw_ptr, lnb_ptr, w_ptr, w2_off, ldw, n, rows, rmask, stats_ptr,
             W: tl.constexpr, ADA_N: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
             BL: tl.constexpr, AFFINE: tl.constexpr, TWO: tl.constexpr, PREC: tl.constexpr,
             NT: tl.constexpr, PARTIALS: tl.constexpr, PDL: tl.constexpr, SPLIT_K: tl.constexpr = 1):
    """A = modulate(LN(h[rows]), shift, scale); returns A @ Wt[:, n] and, with TWO, A @ Wt[:, w2_off + n]
    ([BR, BN] fp32 each), where Wt[k, j] = w_ptr[k·ldw + j]. With SPLIT_K > 1 only over this
    program's K slice (columns [pid2·W/SPLIT_K, (pid2 + 1)·W/SPLIT_K) of A; the LayerNorm statistics
    still cover the full rows).

    The first A tile's loads are issued before the LayerNorm statistics pass and every later tile's
    one iteration ahead, so the K loop does not wait a round trip to L2 for each A tile (the weight
    tiles are pipelined by Triton's num_stages). With PARTIALS the statistics come from the
    producing launch's per-tile partials (``_row_stats_partials``) instead of a pass over h.
    With PDL == 2 (``StepConfig.pdl_prefetch``) the first weight tile(s) are loaded before
    ``_pdl_enter`` and each next one an iteration ahead (by hand, as the A tiles); with PDL == 1
    the loop is the plain one after the wait."""
    KS: tl.constexpr = W // SPLIT_K
    if SPLIT_K == 1:
        k = tl.arange(0, BK)
    else:
        k = tl.program_id(2) * KS + tl.arange(0, BK)      # this slice's first K tile
    if PDL == 2:
        wp = w_ptr + k[:, None] * ldw + n[None, :]
        wt_next = tl.load(wp)
        if TWO:
            wt2_next = tl.load(wp + w2_off)
    _pdl_enter(PDL)
    h, sh, sc, lw, lb = _ln_tile_load(h_ptr, mod_ptr, lnw_ptr, lnb_ptr, rows, rmask, k, W, ADA_N, AFFINE)
    if PARTIALS:
        mean, rstd = _row_stats_partials(stats_ptr, rows, rmask, W, NT)
    else:
        mean, rstd = _row_stats(h_ptr, rows, rmask, W, BR, BL)
    acc = tl.zeros([BR, BN], dtype=tl.float32)
    acc2 = tl.zeros([BR, BN], dtype=tl.float32)
    for k0 in range(0, KS, BK):       # k0 within the slice; k = the slice's first tile's columns
        if PDL == 2:   # this tile was loaded an iteration ahead (the first before the wait)
            wt = wt_next
            wp = w_ptr + ((k0 + BK) % KS + k)[:, None] * ldw + n[None, :]
            wt_next = tl.load(wp)
            if TWO:
                wt2 = wt2_next
                wt2_next = tl.load(wp + w2_off)
        else:
            wp = w_ptr + (k0 + k)[:, None] * ldw + n[None, :]
            wt = tl.load(wp)
            if TWO:
                wt2 = tl.load(wp + w2_off)
        a = _ln_tile(h, sh, sc, lw, lb, mean, rstd, AFFINE).to(wt.dtype)
        # the next tile (after the last one: the slice's first again, a harmless reload)
        h, sh, sc, lw, lb = _ln_tile_load(h_ptr, mod_ptr, lnw_ptr, lnb_ptr, rows, rmask, (k0 + BK) % KS + k,
                                          W, ADA_N, AFFINE)
        acc = tl.dot(a, wt, acc, input_precision=PREC)
        if TWO:
            acc2 = tl.dot(a, wt2, acc2, input_precision=PREC)
    return acc, acc2


@triton.jit
def _splitk_total(acc, acc2, part_ptr, cnt_ptr, rows, rmask, n, n2, ROWS, W: tl.constexpr, NT: tl.constexpr,
                  SPLIT_K: tl.constexpr, TWO: tl.constexpr):
    """Split-K with a serial, deterministic reduction. Each of the SPLIT_K programs of an output
    tile (grid axis 2) writes its partial sums to part [SPLIT_K, ROWS, W] (fp32; at columns n, and
    with TWO also acc2 at columns n2) and bumps the tile's counter; the last to arrive (the
    atomic's release/acquire orders the others' partials before its loads, which bypass L1) resets
    the counter for the next launch and adds the slices in slice order, so the sum does not depend
    on the arrival order and replays stay bit-identical. Returns (whether this program is that
    last one, the sum(s): meaningful only then)."""
    m = rmask[:, None]
    base = rows[:, None] * W + n[None, :]
    base2 = rows[:, None] * W + n2[None, :]
    tl.store(part_ptr + tl.program_id(2) * ROWS * W + base, acc, mask=m)
    if TWO:
        tl.store(part_ptr + tl.program_id(2) * ROWS * W + base2, acc2, mask=m)
    tl.debug_barrier()
    cidx = tl.program_id(1) * NT + tl.program_id(0)
    old = tl.atomic_add(cnt_ptr + cidx, 1, sem="acq_rel", scope="gpu")
    last = old == SPLIT_K - 1
    total = tl.zeros_like(acc)
    total2 = tl.zeros_like(acc2)
    if last:
        tl.debug_barrier()
        tl.store(cnt_ptr + cidx, 0)
        for s in tl.static_range(SPLIT_K):
            total += tl.load(part_ptr + s * ROWS * W + base, mask=m, other=0.0, cache_modifier=".cg")
            if TWO:
                total2 += tl.load(part_ptr + s * ROWS * W + base2, mask=m, other=0.0, cache_modifier=".cg")
    return last, total, total2


@triton.jit
def _input_proj_kernel(x_ptr, w_ptr, b_ptr, h_ptr, stats_ptr, R, ROWS,
                       C: tl.constexpr, W: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr,
                       BKC: tl.constexpr, PREC: tl.constexpr, NT: tl.constexpr, PARTIALS: tl.constexpr,
                       PDL: tl.constexpr):
    """h[rows, n] = x[rows mod R] @ W_in[:, n] + b_in[n] (with CFG row R + q reuses x row q)."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    rows = tl.program_id(1).to(tl.int64) * BR + tl.arange(0, BR)
    rmask = rows < ROWS
    xr = rows % R
    acc = tl.zeros([BR, BN], dtype=tl.float32)
    if PDL == 2:
        wt_next = tl.load(w_ptr + tl.arange(0, BKC)[:, None] * W + n[None, :])
    _pdl_enter(PDL)
    for k0 in range(0, C, BKC):
        k = k0 + tl.arange(0, BKC)
        if PDL == 2:
            wt = wt_next
            wt_next = tl.load(w_ptr + ((k0 + BKC) % C + tl.arange(0, BKC))[:, None] * W + n[None, :])
        else:
            wt = tl.load(w_ptr + k[:, None] * W + n[None, :])
        a = tl.load(x_ptr + xr[:, None] * C + k[None, :], mask=rmask[:, None], other=0.0)
        acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=PREC)
    h = acc + tl.load(b_ptr + n)[None, :]
    tl.store(h_ptr + rows[:, None] * W + n[None, :], h, mask=rmask[:, None])
    if PARTIALS:
        _store_partials(stats_ptr, h, rows, rmask, tl.program_id(0), NT, BN)


@triton.jit
def _block_in_kernel(h_ptr, mod_ptr, lnw_ptr, lnb_ptr, w1_ptr, b1_ptr, u_ptr, stats_ptr, part_ptr, cnt_ptr, ROWS,
                     W: tl.constexpr, ADA_N: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr,
                     BK: tl.constexpr, BL: tl.constexpr, PREC: tl.constexpr, NT: tl.constexpr,
                     PARTIALS: tl.constexpr, PDL: tl.constexpr, SPLIT_K: tl.constexpr):
    """u[rows, n] = SiLU(modulate(LN(h), shift, scale) @ W1[:, n] + b1[n]) of one ResBlock
    (with SPLIT_K > 1: K split over grid axis 2, ``_splitk_total``)."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    rows = tl.program_id(1).to(tl.int64) * BR + tl.arange(0, BR)
    rmask = rows < ROWS
    acc, _ = _ln_gemm(h_ptr, mod_ptr, lnw_ptr, lnb_ptr, w1_ptr, 0, W, n, rows, rmask, stats_ptr,
                      W, ADA_N, BR, BN, BK, BL, True, False, PREC, NT, PARTIALS, PDL, SPLIT_K)
    if SPLIT_K == 1:
        _block_in_epilogue(acc, b1_ptr, u_ptr, rows, rmask, n, W)
    else:
        last, total, _ = _splitk_total(acc, acc, part_ptr, cnt_ptr, rows, rmask, n, n, ROWS, W, NT, SPLIT_K, False)
        if last:
            _block_in_epilogue(total, b1_ptr, u_ptr, rows, rmask, n, W)


@triton.jit
def _block_in_epilogue(acc, b1_ptr, u_ptr, rows, rmask, n, W: tl.constexpr):
    v = acc + tl.load(b1_ptr + n)[None, :]
    v = v * tl.sigmoid(v)
    tl.store(u_ptr + rows[:, None] * W + n[None, :], v.to(u_ptr.dtype.element_ty), mask=rmask[:, None])


@triton.jit
def _block_out_kernel(u_ptr, w2_ptr, b2_ptr, gate_ptr, h_ptr, stats_ptr, part_ptr, cnt_ptr, ROWS,
                      W: tl.constexpr, ADA_N: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr,
                      BK: tl.constexpr, PREC: tl.constexpr, NT: tl.constexpr, PARTIALS: tl.constexpr,
                      PDL: tl.constexpr, SPLIT_K: tl.constexpr):
    """h[rows, n] += gate[rows, n] · (u @ W2[:, n] + b2[n]) of one ResBlock (in place; with
    SPLIT_K > 1: K split over grid axis 2, ``_splitk_total``)."""
    KS: tl.constexpr = W // SPLIT_K
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    rows = tl.program_id(1).to(tl.int64) * BR + tl.arange(0, BR)
    rmask = rows < ROWS
    m = rmask[:, None]
    if SPLIT_K == 1:
        kb = tl.arange(0, BK)
    else:
        kb = tl.program_id(2) * KS + tl.arange(0, BK)     # this slice's first K tile
    acc = tl.zeros([BR, BN], dtype=tl.float32)
    if PDL == 2:
        wt_next = tl.load(w2_ptr + kb[:, None] * W + n[None, :])
    _pdl_enter(PDL)
    for k0 in range(0, KS, BK):
        k = k0 + kb
        if PDL == 2:
            wt = wt_next
            wt_next = tl.load(w2_ptr + ((k0 + BK) % KS + kb)[:, None] * W + n[None, :])
        else:
            wt = tl.load(w2_ptr + k[:, None] * W + n[None, :])
        a = tl.load(u_ptr + rows[:, None] * W + k[None, :], mask=m, other=0.0)
        acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=PREC)
    if SPLIT_K == 1:
        _block_out_epilogue(acc, b2_ptr, gate_ptr, h_ptr, stats_ptr, rows, rmask, n, W, ADA_N, BN, NT, PARTIALS)
    else:
        last, total, _ = _splitk_total(acc, acc, part_ptr, cnt_ptr, rows, rmask, n, n, ROWS, W, NT, SPLIT_K, False)
        if last:
            _block_out_epilogue(total, b2_ptr, gate_ptr, h_ptr, stats_ptr, rows, rmask, n, W, ADA_N, BN, NT,
                                PARTIALS)


@triton.jit
def _block_out_epilogue(acc, b2_ptr, gate_ptr, h_ptr, stats_ptr, rows, rmask, n, W: tl.constexpr,
                        ADA_N: tl.constexpr, BN: tl.constexpr, NT: tl.constexpr, PARTIALS: tl.constexpr):
    m = rmask[:, None]
    gate = tl.load(gate_ptr + rows[:, None] * ADA_N + n[None, :], mask=m, other=0.0).to(tl.float32)
    offs = rows[:, None] * W + n[None, :]
    h = tl.load(h_ptr + offs, mask=m, other=0.0) + gate * (acc + tl.load(b2_ptr + n)[None, :])
    tl.store(h_ptr + offs, h, mask=m)
    if PARTIALS:
        _store_partials(stats_ptr, h, rows, rmask, tl.program_id(0), NT, BN)


@triton.jit
def _final_kernel(h_ptr, mod_ptr, wf_ptr, bf_ptr, x_ptr, coef_ptr, noise_ptr, guid_ptr, temp_ptr, stats_ptr,
                  part_ptr, cnt_ptr, R,
                  C: tl.constexpr, W: tl.constexpr, ADA_N: tl.constexpr, HAS_UNCOND: tl.constexpr,
                  HAS_NOISE: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                  BL: tl.constexpr, PREC: tl.constexpr, NT: tl.constexpr, PARTIALS: tl.constexpr,
                  PDL: tl.constexpr, SPLIT_K: tl.constexpr):
    """Final layer for token channels ``ce`` (its ε and v columns), CFG on ε, DDPM update of x.

    A program owns ``BQ`` cond rows q; with CFG its A tile holds them and then their uncond rows
    (h rows R + q), so one dot per weight tile serves both halves, which are split apart for the
    guidance at the end. ``coef_ptr`` points at coefs[i], ``noise_ptr`` at the noise slot of this
    step (unused without HAS_NOISE, i.e. at i = 0). With SPLIT_K > 1 the K loop is split over grid
    axis 2 (``_splitk_total``: ε and v partials in columns [0, C) and [C, 2C) of the scratch)."""
    BQ: tl.constexpr = BR // 2 if HAS_UNCOND else BR
    ce = tl.program_id(0) * BC + tl.arange(0, BC)
    q = tl.program_id(1).to(tl.int64) * BQ + tl.arange(0, BQ)
    qmask = q < R
    if HAS_UNCOND:
        t = tl.arange(0, BR)
        rows = tl.where(t < BQ, 0, R - BQ) + tl.program_id(1).to(tl.int64) * BQ + t
        rmask = (tl.program_id(1).to(tl.int64) * BQ + t % BQ) < R
    else:
        rows = q
        rmask = qmask
    eps, var = _ln_gemm(h_ptr, mod_ptr, mod_ptr, mod_ptr, wf_ptr, C, 2 * C, ce, rows, rmask, stats_ptr,
                        W, ADA_N, BR, BC, BK, BL, False, True, PREC, NT, PARTIALS, PDL, SPLIT_K)
    if SPLIT_K == 1:
        _final_epilogue(eps, var, bf_ptr, x_ptr, coef_ptr, noise_ptr, guid_ptr, temp_ptr, ce, q, qmask,
                        C, BQ, BC, HAS_UNCOND, HAS_NOISE)
    else:
        last, eps, var = _splitk_total(eps, var, part_ptr, cnt_ptr, rows, rmask, ce, C + ce,
                                       2 * R if HAS_UNCOND else R, W, NT, SPLIT_K, True)
        if last:
            _final_epilogue(eps, var, bf_ptr, x_ptr, coef_ptr, noise_ptr, guid_ptr, temp_ptr, ce, q, qmask,
                            C, BQ, BC, HAS_UNCOND, HAS_NOISE)


@triton.jit
def _final_epilogue(eps, var, bf_ptr, x_ptr, coef_ptr, noise_ptr, guid_ptr, temp_ptr, ce, q, qmask,
                    C: tl.constexpr, BQ: tl.constexpr, BC: tl.constexpr, HAS_UNCOND: tl.constexpr,
                    HAS_NOISE: tl.constexpr):
    eps = eps + tl.load(bf_ptr + ce)[None, :]
    var = var + tl.load(bf_ptr + C + ce)[None, :]
    if HAS_UNCOND:   # [cond rows; uncond rows] → two [BQ, BC] halves
        eps_c, eps_u = tl.split(tl.permute(tl.reshape(eps, (2, BQ, BC)), (1, 2, 0)))
        var, _ = tl.split(tl.permute(tl.reshape(var, (2, BQ, BC)), (1, 2, 0)))
        eps = eps_u + tl.load(guid_ptr) * (eps_c - eps_u)
    m = qmask[:, None]
    xoff = q[:, None] * C + ce[None, :]
    x = tl.load(coef_ptr) * tl.load(x_ptr + xoff, mask=m, other=0.0) - tl.load(coef_ptr + 1) * eps
    if HAS_NOISE:
        z = tl.load(noise_ptr + xoff, mask=m, other=0.0)
        x = x + tl.exp(0.5 * (tl.load(coef_ptr + 2) + tl.load(coef_ptr + 3) * var)) * (z * tl.load(temp_ptr))
    tl.store(x_ptr + xoff, x, mask=m)


# ---------------------------------------------------------------------------------------------
# Host side: configuration, scratch, launcher


@dataclass(frozen=True)
class StepConfig:
    """Tile sizes (powers of two; ``tl.dot`` wants ≥ 16 on a GPU).

    block_rows: rows per program (None: all rows of an iteration in one block up to 32, else 32;
    the final launch takes half of them as cond rows and their uncond rows with CFG);
    block_n: width columns per program (w = 1024 / 16 → 64 programs a layer on a 132-SM GPU);
    block_k: K tile of the GEMMs; block_c: token channels per program of the final launch
    (C = 128 / 32 → 4 programs); block_ln: columns per tile of the LayerNorm statistics pass.
    ln_partials: the launches that produce h (input projection, each block's GEMM2) also write
    each row's mean and M2 over their ``block_n`` columns, and the LayerNorm launches combine these
    w / block_n partials instead of reading the full rows of h (``_row_stats_partials``):
    51.2 against 54.0 µs a step on an H100 (session 13).
    pdl: programmatic dependent launch (Hopper, sm_90+): every launch goes out with
    ``launch_pdl=True``; its programs load their first weight tile, wait for the previous launch
    (griddepcontrol.wait) and at once let the next launch start (``_pdl_enter``), so that the
    launch gap and the first weight round trip to L2 overlap the previous launch's work instead of
    following it. Kept inside CUDA graphs as programmatic edges. Needs a GPU of compute capability
    9.0 or more (the interpreter has no griddepcontrol): refused elsewhere. Measured slower on an
    H100 (session 13: 58.8 against 54.0 µs a step, 53.7 against 51.2 with ``ln_partials``): in a
    CUDA graph the launch gap is small, and the hand-prefetched weight tiles lose Triton's
    cp.async pipeline. Parity-tested there (full size, graph replay).
    split_k: the block launches (LN + GEMM1, GEMM2) and the final launch split K = w over
    ``split_k`` programs per output tile (grid axis 2), each over w / split_k columns; the last of
    them to finish adds the partial sums in slice order and runs the epilogue (``_splitk_total``: deterministic, so
    replays stay bit-identical). For few rows a K loop of 4 dependent tiles becomes one, as cuBLAS
    does for such shapes. Written in session 13 after the lease: parity-tested in the interpreter,
    compiled for sm_90, untimed.
    pdl_prefetch: with ``pdl``, load the first weight tile before the wait and each next one by
    hand (True, as timed in session 13); False keeps the plain K loops after the wait, so that only
    the launch overlap differs from ``pdl=False`` (written after that lease, untimed).
    The defaults were the fastest of the configurations timed at batch 1 on an H200 (module
    docstring; ``python -m kernels.step_kernels --bench --sweep``)."""

    block_rows: int | None = None
    block_n: int = 16
    block_k: int = 256
    block_c: int = 32
    block_ln: int = 256
    num_warps: int = 4
    num_stages: int = 3
    ln_partials: bool = False
    pdl: bool = False
    pdl_prefetch: bool = True
    split_k: int = 1

    @property
    def pdl_mode(self) -> int:
        """The kernels' PDL constexpr: 0 off, 1 wait + trigger only, 2 with the weight prefetch."""
        return 0 if not self.pdl else (2 if self.pdl_prefetch else 1)

    def resolve(self, rows2: int, width: int, token_dim: int) -> StepConfig:
        """The config for ``rows2`` (cond + uncond) rows: block_rows filled in, block_k/block_ln
        clipped to the width; raises ValueError where a tile does not divide its dimension."""
        br = self.block_rows or min(32, max(16, triton.next_power_of_2(rows2)))
        if self.split_k < 1 or self.split_k & (self.split_k - 1) or width % self.split_k:
            raise ValueError(f"StepConfig.split_k must be a power of two dividing {width}, got {self.split_k}")
        if self.split_k > 1 and 2 * token_dim > width:
            raise ValueError(f"StepConfig.split_k > 1 keeps the final launch's ε and v partials in a [rows, {width}] "
                             f"scratch: needs 2·C ≤ w, got C {token_dim}")
        cfg = replace(self, block_rows=br, block_k=min(self.block_k, width // self.split_k),
                      block_ln=min(self.block_ln, width))
        for name, size, dim in (("block_rows", cfg.block_rows, None), ("block_n", cfg.block_n, width),
                                ("block_k", cfg.block_k, width // cfg.split_k), ("block_ln", cfg.block_ln, width),
                                ("block_c", cfg.block_c, token_dim)):
            if size < 1 or size & (size - 1):
                raise ValueError(f"StepConfig.{name} must be a power of two, got {size}")
            if dim is not None and dim % size:
                raise ValueError(f"StepConfig.{name}={size} does not divide {dim}")
        return cfg


@dataclass
class StepScratch:
    """The state buffers of the step launches: h [2R, w] fp32, u [2R, w] (weight dtype) and, with
    ``StepConfig.ln_partials``, the LayerNorm partials stats [2R, 2·w/block_n] fp32."""

    h: torch.Tensor
    u: torch.Tensor
    stats: torch.Tensor | None = None
    part: torch.Tensor | None = None      # split-K partial sums [split_k, 2R, w] fp32
    count: torch.Tensor | None = None     # split-K arrival counters, one per output tile (int32, zero between launches)


def step_scratch(rows2: int, width: int, dtype: torch.dtype, device, config: StepConfig | None = None) -> StepScratch:
    """Preallocate h and u (and the LayerNorm partials when ``config.ln_partials``) for ``rows2``
    rows (cond + uncond), so a captured graph has static memory."""
    stats = part = count = None
    if config is not None and config.ln_partials:
        stats = torch.empty((rows2, 2 * (width // config.block_n)), device=device, dtype=torch.float32)
    if config is not None and config.split_k > 1:
        part = torch.empty((config.split_k, rows2, width), device=device, dtype=torch.float32)
        count = torch.zeros((rows2 * (width // config.block_n),), device=device, dtype=torch.int32)  # ≥ row blocks × tiles
    return StepScratch(h=torch.empty((rows2, width), device=device, dtype=torch.float32),
                       u=torch.empty((rows2, width), device=device, dtype=dtype), stats=stats, part=part, count=count)


def _launch(kernel, grid, *args, **meta):
    """Every Triton launch of a sampling step goes through here (the tests count them)."""
    kernel[grid](*args, **meta)


def _device_scalar(v, device) -> torch.Tensor:
    """A 1-element fp32 device tensor (a view when ``v`` already is one: graph-safe)."""
    if isinstance(v, torch.Tensor):
        return v.reshape(-1)[:1].to(device=device, dtype=torch.float32)
    return torch.full((1,), float(v), dtype=torch.float32, device=device)


def _compiled_triton() -> bool:
    """Whether this process's Triton compiles the kernels (False under TRITON_INTERPRET=1, as it
    was when Triton was first imported)."""
    return type(_block_in_kernel).__name__ == "JITFunction"


def pdl_unavailable(device) -> str | None:
    """Why programmatic dependent launch (``StepConfig.pdl``) cannot run on ``device``, or None
    where it can: compiled Triton on a CUDA GPU of compute capability ≥ 9.0."""
    if not _compiled_triton():
        return ("StepConfig.pdl needs compiled Triton on a Hopper GPU; the Triton interpreter has no "
                "programmatic dependent launch")
    device = torch.device(device)
    if device.type != "cuda":
        return f"StepConfig.pdl needs a CUDA GPU of compute capability >= 9.0, got device {device}"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        return f"StepConfig.pdl needs compute capability >= 9.0 (Hopper), this GPU is sm_{major}{minor}"
    return None


def check_pdl(device) -> None:
    """Raise ValueError with ``pdl_unavailable``'s reason where PDL cannot run on ``device``."""
    why = pdl_unavailable(device)
    if why:
        raise ValueError(why)


def sampling_step(weights: HeadWeights, x: torch.Tensor, mods_i: torch.Tensor, coefs_i: torch.Tensor,
                  noise_i: torch.Tensor | None, guidance: torch.Tensor, temperature: torch.Tensor, *,
                  cfg: bool, config: StepConfig, scratch: StepScratch) -> None:
    """One reverse step x_i → x_{i−1} in place on x [R, C] fp32: exactly 2 + 2d launches.

    mods_i [2R (R without CFG), ada_n] (contiguous rows), coefs_i [4] fp32, noise_i [R, C] fp32
    or None (i = 0); guidance / temperature 1-element fp32 device tensors; ``config`` resolved."""
    w, c, depth, ada_n = weights.width, weights.token_dim, weights.depth, weights.ada_n
    r = x.shape[0]
    rows2 = 2 * r if cfg else r
    h, u = scratch.h, scratch.u
    br, bn, bk, bl = config.block_rows, config.block_n, config.block_k, config.block_ln
    prec = "ieee" if weights.dtype == torch.float32 else "tf32"
    stats = scratch.stats if config.ln_partials else h          # unused without partials
    meta = dict(num_warps=config.num_warps, num_stages=config.num_stages, NT=w // bn, PARTIALS=config.ln_partials,
                PDL=config.pdl_mode)
    if config.pdl:
        meta["launch_pdl"] = True
    grid_w = (w // bn, triton.cdiv(rows2, br))
    sk = config.split_k
    grid_k = grid_w + (sk,)
    part, count = (scratch.part, scratch.count) if sk > 1 else (h, h)   # unused without split-K
    _launch(_input_proj_kernel, grid_w, x, weights.w_in, weights.b_in, h, stats, r, rows2,
            C=c, W=w, BR=br, BN=bn, BKC=min(bk, c), PREC=prec, **meta)
    for blk in range(depth):
        sh = 3 * w * blk
        _launch(_block_in_kernel, grid_k, h, mods_i[:, sh:], weights.ln_w[blk], weights.ln_b[blk],
                weights.w1[blk], weights.b1[blk], u, stats, part, count, rows2,
                W=w, ADA_N=ada_n, BR=br, BN=bn, BK=bk, BL=bl, PREC=prec, SPLIT_K=sk, **meta)
        _launch(_block_out_kernel, grid_k, u, weights.w2[blk], weights.b2[blk], mods_i[:, sh + 2 * w:], h, stats,
                part, count, rows2, W=w, ADA_N=ada_n, BR=br, BN=bn, BK=bk, PREC=prec, SPLIT_K=sk, **meta)
    _launch(_final_kernel, (c // config.block_c, triton.cdiv(r, br // 2 if cfg else br), sk),
            h, mods_i[:, 3 * w * depth:], weights.wf, weights.bf, x, coefs_i, x if noise_i is None else noise_i,
            guidance, temperature, stats, part, count, r,
            C=c, W=w, ADA_N=ada_n, HAS_UNCOND=cfg, HAS_NOISE=noise_i is not None,
            BR=br, BC=config.block_c, BK=bk, BL=bl, PREC=prec, SPLIT_K=sk, **meta)


def sample_steps(weights: HeadWeights, mods: torch.Tensor, coefs: torch.Tensor, noise: torch.Tensor,
                 guidance, temperature, *, cfg: bool, config: StepConfig | None = None,
                 scratch: StepScratch | None = None) -> torch.Tensor:
    """The whole T̂-step sampler of one iteration's rows → x_0 [R, C] fp32 (T̂ × (2 + 2d) launches).

    weights: ``pack_head(head, dtype)``; mods [T̂, 2R (R without CFG), (3d+2)·w]: every step's adaLN
    modulations (``modulation_table``), usually in the weight dtype; coefs [T̂, 4] fp32
    (coef_x, coef_eps, logvar_mid, logvar_half; ``head_tables``); noise [T̂, R, C] fp32 (slot 0 =
    x_T̂, slot j+1 = the noise after position j; more slots are ignored). guidance / temperature:
    1-element device tensors (floats are turned into fresh tensors: not for a captured graph whose
    values change). No host sync: capture the call in a ``torch.cuda.CUDAGraph`` (with ``scratch``
    from ``step_scratch`` for static state) and replay it; the same math as the GEMM path's loop
    (``CudaBackend.sample_gemm`` with the adaLN table)."""
    steps, rows2, ada_n = mods.shape
    r, c, w = noise.shape[1], weights.token_dim, weights.width
    if rows2 != (2 * r if cfg else r) or ada_n != weights.ada_n:
        raise ValueError(f"sample_steps: mods must be [T̂, {2 * r if cfg else r}, {weights.ada_n}] "
                         f"for {r} rows (cfg={cfg}), got {tuple(mods.shape)}")
    if noise.shape[0] < steps or noise.shape[2] != c:
        raise ValueError(f"sample_steps: noise must be [≥{steps}, R, {c}], got {tuple(noise.shape)}")
    if coefs.shape != (steps, 4):
        raise ValueError(f"sample_steps: coefs must be [{steps}, 4], got {tuple(coefs.shape)}")
    dev = noise.device
    config = (config or StepConfig()).resolve(rows2, w, c)
    if config.pdl:
        check_pdl(dev)
    if scratch is None:
        scratch = step_scratch(rows2, w, weights.dtype, dev, config)
    if tuple(scratch.h.shape) != (rows2, w) or tuple(scratch.u.shape) != (rows2, w):
        raise ValueError(f"sample_steps: scratch must hold [{rows2}, {w}] buffers")
    if config.ln_partials and (scratch.stats is None or tuple(scratch.stats.shape) != (rows2, 2 * (w // config.block_n))):
        raise ValueError(f"sample_steps: ln_partials needs scratch.stats [{rows2}, {2 * (w // config.block_n)}] "
                         "(step_scratch(..., config))")
    if config.split_k > 1 and (scratch.part is None or tuple(scratch.part.shape) != (config.split_k, rows2, w)
                               or scratch.count is None or scratch.count.numel() < rows2 * (w // config.block_n)):
        raise ValueError(f"sample_steps: split_k {config.split_k} needs scratch.part [{config.split_k}, {rows2}, {w}] "
                         "and scratch.count (step_scratch(..., config))")
    mods = mods.contiguous()
    coefs = coefs.to(dev, torch.float32).contiguous()
    noise = noise.to(torch.float32).contiguous()
    g, t = _device_scalar(guidance if cfg else 1.0, dev), _device_scalar(temperature, dev)
    x = torch.empty((r, c), device=dev, dtype=torch.float32)
    x.copy_(noise[0])
    for j in range(steps):
        i = steps - 1 - j
        sampling_step(weights, x, mods[i], coefs[i], noise[j + 1] if i > 0 else None, g, t,
                      cfg=cfg, config=config, scratch=scratch)
    return x


@torch.no_grad()
def modulation_table(head, c_emb: torch.Tensor, t_emb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Every step's adaLN modulations [T̂, rows, (3d+2)·w] in ``dtype``: what the GEMM path builds
    as ``head.modulations((c_emb[None] + t_emb[:, None]).to(dtype))`` with the head in ``dtype``,
    computed from the head's own adaLN linears cast to ``dtype`` (the head is not converted).

    c_emb [rows, w]: cond_embed of the cond rows then the uncond rows (CFG); t_emb [T̂, w]."""
    y = F.silu((c_emb[None] + t_emb[:, None]).to(dtype))
    linears = [b.adaLN_modulation[1] for b in head.res_blocks] + [head.final_layer.adaLN_modulation[1]]
    return torch.cat([F.linear(y, m.weight.to(dtype), m.bias.to(dtype)) for m in linears], dim=-1).contiguous()


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation (no GPU needed)


def compile_step_kernels_for_arch(arch: int = 90, dtype: torch.dtype = torch.float16, *, width: int = 1024,
                                  depth: int = 3, token_dim: int = 128, rows2: int = 8, cfg: bool = True,
                                  config: StepConfig | None = None) -> dict:
    """Compile every step kernel for sm_<arch> with Triton's real compiler (and its ptxas), no GPU.

    Returns {name: compiled kernel} (``.asm['ptx']``, ``.asm['cubin']``, ``.metadata``); the final
    kernel twice, with and without the noise term. Must run where TRITON_INTERPRET is not set."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if not _compiled_triton():
        raise RuntimeError("compile_step_kernels_for_arch needs compiled Triton (unset TRITON_INTERPRET)")
    c = (config or StepConfig()).resolve(rows2, width, token_dim)
    wt = _PTR[dtype]
    prec = "ieee" if dtype == torch.float32 else "tf32"
    types = dict(w_ptr=wt, w1_ptr=wt, w2_ptr=wt, wf_ptr=wt, mod_ptr=wt, gate_ptr=wt, u_ptr=wt,
                 R="i32", ROWS="i32", cnt_ptr="*i32")
    common = dict(W=width, BR=c.block_rows, PREC=prec, NT=width // c.block_n, PARTIALS=c.ln_partials,
                  PDL=c.pdl_mode)
    jobs = {
        "input_proj": (_input_proj_kernel, dict(C=token_dim, BN=c.block_n, BKC=min(c.block_k, token_dim))),
        "block_in": (_block_in_kernel, dict(ADA_N=(3 * depth + 2) * width, BN=c.block_n, BK=c.block_k,
                                            BL=c.block_ln, SPLIT_K=c.split_k)),
        "block_out": (_block_out_kernel, dict(ADA_N=(3 * depth + 2) * width, BN=c.block_n, BK=c.block_k,
                                              SPLIT_K=c.split_k)),
    }
    for noise in (True, False):
        jobs[f"final{'' if noise else '_last'}"] = (_final_kernel, dict(
            C=token_dim, ADA_N=(3 * depth + 2) * width, HAS_UNCOND=cfg, HAS_NOISE=noise, BC=c.block_c,
            BK=c.block_k, BL=c.block_ln, SPLIT_K=c.split_k))
    out = {}
    for name, (kernel, consts) in jobs.items():
        consts = {**common, **consts}
        sig = {n: ("constexpr" if n in consts else types.get(n, "*fp32")) for n in kernel.arg_names}
        out[name] = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", arch, 32),
                                   options=dict(num_warps=c.num_warps, num_stages=c.num_stages,
                                                **({"launch_pdl": True} if c.pdl else {})))
    return out


# ---------------------------------------------------------------------------------------------
# Benchmark (GPU): python -m kernels.step_kernels --bench


def _time_ms(fn, reps: int) -> float:
    """Median wall time of ``fn`` on the GPU in ms (CUDA events, after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _graphed(fn):
    """Capture ``fn()`` (after a warm-up on a side stream) → (replay, output of the capture)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g.replay, out


def kernel_breakdown(weights: HeadWeights, mods: torch.Tensor, coefs: torch.Tensor, noise: torch.Tensor,
                     guidance: torch.Tensor, temperature: torch.Tensor, config: StepConfig, reps: int = 50) -> list:
    """µs per launch of each of one sampling step's launches: each launch repeated ``reps`` times
    in a CUDA graph (so the time includes the gap between dependent kernels of a graph)."""
    global _launch
    c = weights.token_dim
    config = config.resolve(mods.shape[1], weights.width, c)
    scratch = step_scratch(mods.shape[1], weights.width, weights.dtype, noise.device, config)
    x = noise[0].clone()
    recorded, real = [], _launch
    _launch = lambda kernel, grid, *args, **meta: recorded.append((kernel, grid, args, meta))  # noqa: E731
    try:
        i = mods.shape[0] // 2
        sampling_step(weights, x, mods[i], coefs[i], noise[1], guidance, temperature, cfg=True, config=config,
                      scratch=scratch)
    finally:
        _launch = real
    out = []
    for kernel, grid, args, meta in recorded:
        def many(kernel=kernel, grid=grid, args=args, meta=meta):
            for _ in range(reps):
                kernel[grid](*args, **meta)
        replay, _ = _graphed(many)
        out.append((kernel.fn.__name__ if hasattr(kernel, "fn") else str(kernel), grid,
                    1000 * _time_ms(replay, 10) / reps))
    return out


def bench(steps: int = 100, rows: int = 4, width: int = 1024, depth: int = 3, token_dim: int = 128,
          configs: list[StepConfig] | None = None, inductor: bool = False, profile: bool = False,
          eager: bool = True, reps: int = 20) -> list[dict]:
    """µs per sampling step: this path in a CUDA graph (each config), the eager torch loop of the
    same math (plain and in a CUDA graph), optionally the GEMM path's step compiled by inductor and
    a per-launch breakdown (``kernel_breakdown``) of the first and the fastest config."""
    from impact_rt import ddpm
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    dev, dt = torch.device("cuda"), torch.float16
    torch.manual_seed(0)
    head32 = randomize_(DiffusionHead(token_dim, 768, width, depth), seed=0, scale=0.5).eval().to(dev)
    head = copy.deepcopy(head32).to(dt)
    t_emb, coefs = head_tables(head32, ddpm.sampling_schedule(1000, steps).tensors(device=dev))
    c_emb = torch.randn(2 * rows, width, device=dev)
    mods = modulation_table(head32, c_emb, t_emb, dt)
    noise = torch.randn(steps, rows, token_dim, device=dev)
    g, t = torch.full((1,), 3.0, device=dev), torch.ones(1, device=dev)
    weights = pack_head(head32, dt, dev)
    results = []

    def row(name, ms, **extra):
        results.append(dict(name=name, us_per_step=1000 * ms / steps, **extra))
        diff = f", max|x − eager| {extra['max_abs_diff_vs_eager']:.2e}" if "max_abs_diff_vs_eager" in extra else ""
        print(f"{name:<44s} {1000 * ms / steps:8.1f} µs/step  ({ms:.2f} ms for {steps} steps{diff})", flush=True)

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; "
          f"w {width}, d {depth}, C {token_dim}, T̂ {steps}, R {rows} + CFG, fp16", flush=True)
    from impact_rt.cuda_backend import gemm_sampling_loop, make_gemm_step

    def gemm_path(compile_head=""):   # the GEMM path's own step and loop (the backend's sample_gemm)
        step = make_gemm_step(head, dt, token_dim, compile_head)
        return lambda: gemm_sampling_loop(step, c_emb, t_emb, coefs, noise, g, t, mods)

    eager_loop = gemm_path()
    with torch.inference_mode():
        ref = eager_loop()
        for cfg in configs or [StepConfig()]:
            scratch = step_scratch(2 * rows, width, dt, dev, cfg)
            try:
                replay, out = _graphed(lambda: sample_steps(weights, mods, coefs, noise, g, t, cfg=True, config=cfg,
                                                            scratch=scratch))
            except triton.runtime.errors.OutOfResources as e:
                print(f"step kernels {cfg}: skipped ({e})", flush=True)
                continue
            replay()
            err = (out - ref).abs().max().item()
            row(f"step kernels (graph) {cfg}", _time_ms(replay, reps), max_abs_diff_vs_eager=err, config=cfg)
        if eager:
            row("eager torch loop", _time_ms(eager_loop, 5))
            replay, _ = _graphed(eager_loop)
            row("eager torch loop (graph)", _time_ms(replay, reps))
        if inductor:
            replay, _ = _graphed(gemm_path("inductor"))
            row("GEMM path step, inductor (graph)", _time_ms(replay, reps))
        if profile:   # per-launch breakdown of the default and of the fastest config
            ours = [x for x in results if "config" in x]
            best = min(ours, key=lambda x: x["us_per_step"])["config"]
            for cfg in dict.fromkeys([configs[0] if configs else StepConfig(), best]):
                parts = kernel_breakdown(weights, mods, coefs, noise, g, t, cfg)
                print(f"per launch, {cfg}: " + ", ".join(f"{n} {grid} {us:.1f} µs" for n, grid, us in parts)
                      + f"; sum {sum(us for *_, us in parts):.1f} µs", flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kernels.step_kernels", description=__doc__.split("\n")[0])
    ap.add_argument("--bench", action="store_true", help="time sample_steps on the GPU")
    ap.add_argument("--sweep", action="store_true", help="with --bench: a few tile configurations")
    ap.add_argument("--inductor", action="store_true", help="with --bench: also the inductor-compiled GEMM step")
    ap.add_argument("--profile", action="store_true", help="with --bench: µs per launch of one step")
    ap.add_argument("--no-eager", action="store_true", help="with --bench: skip the eager torch loop")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rows", type=int, default=4, help="cond rows (CFG doubles them)")
    ap.add_argument("--compile", type=int, nargs="?", const=90, metavar="ARCH",
                    help="AOT-compile every kernel for sm_ARCH (default 90), no GPU needed")
    a = ap.parse_args(argv)
    if a.compile:
        for dt in (torch.float16, torch.bfloat16, torch.float32):
            for name, k in compile_step_kernels_for_arch(a.compile, dt).items():
                print(f"sm_{a.compile} {str(dt).split('.')[-1]:8s} {name:<11s}: {len(k.asm['cubin'])} B cubin, "
                      f"shared {k.metadata.shared} B", flush=True)
    if not a.bench:
        return 0
    if not torch.cuda.is_available():
        print("kernels.step_kernels --bench: no CUDA GPU here (torch.cuda.is_available() is False); nothing timed")
        return 0
    base = [StepConfig(), StepConfig(ln_partials=True)]       # the LayerNorm statistics both ways
    # with the partials the final launch's LayerNorm is cheap: more programs may now pay (session 10
    # timed block_c 16 and block_n 32 only with the full-row statistics)
    configs = base + [StepConfig(ln_partials=True, block_c=16), StepConfig(ln_partials=True, block_n=32)]
    # split-K of the block launches (one K tile of 256 per program at split 4)
    configs += [StepConfig(ln_partials=True, split_k=2), StepConfig(ln_partials=True, split_k=4),
                StepConfig(ln_partials=True, split_k=4, block_n=32)]
    if pdl_unavailable("cuda") is None:                        # programmatic dependent launch, with and
        configs += [replace(cfg, pdl=True, pdl_prefetch=pf) for pf in (True, False) for cfg in base]   # without prefetch
    if a.sweep:
        configs = [StepConfig(block_n=bn, block_k=bk, block_c=bc, num_warps=nw, num_stages=ns)
                   for bn, bk, bc, nw, ns in ((16, 256, 32, 4, 3), (16, 256, 16, 4, 3), (32, 256, 32, 4, 3),
                                              (16, 256, 32, 8, 3), (16, 256, 32, 4, 2), (16, 128, 32, 4, 3),
                                              (32, 128, 16, 4, 3), (32, 64, 16, 4, 3), (16, 512, 32, 8, 2))]
        configs += [replace(cfg, ln_partials=True) for cfg in configs[:3]]
    bench(a.steps, a.rows, configs=configs, inductor=a.inductor, profile=a.profile, eager=not a.no_eager)
    return 0


if __name__ == "__main__":
    sys.exit(main())
