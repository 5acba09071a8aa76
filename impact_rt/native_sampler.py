"""The native fused diffusion-head sampler (issue 5): one C call runs the whole T̂-step loop.

The library (``kernels/native/``, built by ``pip install`` as the optional extension
``impact_rt._native_sampler`` or by CMake) has a plain C ABI and is loaded with ctypes. It runs
every DDPM step of one decoding iteration for all rows (cond and uncond together) with the state
and accumulation in fp32, OpenMP across row blocks, and weights in fp32 (AVX-512F / AVX2 /
portable kernels) or bf16 (AVX-512 BF16 ``vdpbf16ps``), chosen at run time from the CPU.

This module never substitutes the reference sampler by itself: ``available()`` says whether the
library can be used, and the caller decides (the pure-Python fallback is
``impact_rt.sampler.sample_head``).

``IMPACT_RT_NATIVE_LIB=/path/to/lib.so`` loads a library built elsewhere (e.g. by CMake:
``build/libimpact_native_sampler.so``) instead of the installed extension.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import threading

import torch

from .diffusion_head import DiffusionHead

ABI_VERSION = 1
PANEL = 64
DTYPES = {"fp32": 0, "bf16": 1}
ISA_NAMES = ("generic", "avx2", "avx512", "avx512-bf16", "amx-bf16")
ISA_AUTO = -1
SPLITS = {"auto": 0, "rows": 1, "columns": 2}


class ImpactLinear(ctypes.Structure):
    _fields_ = [("k", ctypes.c_int32), ("n", ctypes.c_int32), ("w", ctypes.c_void_p), ("b", ctypes.c_void_p)]


class ImpactHead(ctypes.Structure):
    _fields_ = [("token_dim", ctypes.c_int32), ("width", ctypes.c_int32), ("depth", ctypes.c_int32),
                ("dtype", ctypes.c_int32), ("linears", ctypes.POINTER(ImpactLinear)),
                ("n_linears", ctypes.c_int32), ("ln_w", ctypes.c_void_p), ("ln_b", ctypes.c_void_p)]


class ImpactSampleArgs(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_int32), ("steps", ctypes.c_int32),
                ("c_emb_cond", ctypes.c_void_p), ("c_emb_uncond", ctypes.c_void_p), ("t_emb", ctypes.c_void_p),
                ("coef_x", ctypes.c_void_p), ("coef_eps", ctypes.c_void_p),
                ("logvar_mid", ctypes.c_void_p), ("logvar_half", ctypes.c_void_p),
                ("noise", ctypes.c_void_p), ("guidance", ctypes.c_float), ("temperature", ctypes.c_float),
                ("x0", ctypes.c_void_p)]


# ---------------------------------------------------------------------------------------------
# Loading

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_error: str | None = None
_lib_path: str | None = None


def library_path() -> tuple[str | None, str]:
    """Where the library is (or None) and a one-line reason when it is not found."""
    env = os.environ.get("IMPACT_RT_NATIVE_LIB")
    if env:
        if os.path.isfile(env):
            return env, ""
        return None, f"IMPACT_RT_NATIVE_LIB={env} does not exist"
    try:
        spec = importlib.util.find_spec("impact_rt._native_sampler")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None, ("the native sampler library impact_rt._native_sampler is not built (no C++ compiler "
                      "when the package was installed?); reinstall with g++ available, or build it with "
                      "CMake and set IMPACT_RT_NATIVE_LIB")
    return spec.origin, ""


def _load() -> ctypes.CDLL:
    global _lib, _lib_error, _lib_path
    with _lock:
        if _lib is not None:
            return _lib
        if _lib_error is not None:
            raise OSError(_lib_error)
        path, why = library_path()
        if path is None:
            _lib_error = why
            raise OSError(why)
        try:
            lib = ctypes.CDLL(path)
            lib.impact_native_abi_version.restype = ctypes.c_int32
            version = lib.impact_native_abi_version()
            if version != ABI_VERSION:
                raise OSError(f"ABI version {version}, expected {ABI_VERSION}: rebuild the extension")
            for name in ("impact_native_isas", "impact_native_max_threads"):
                getattr(lib, name).restype = ctypes.c_int32
                getattr(lib, name).argtypes = []
            for name in ("impact_native_best_isa", "impact_native_isa_dtype"):
                getattr(lib, name).restype = ctypes.c_int32
                getattr(lib, name).argtypes = [ctypes.c_int32]
            lib.impact_native_sample.restype = ctypes.c_int32
            lib.impact_native_sample.argtypes = [ctypes.POINTER(ImpactHead), ctypes.POINTER(ImpactSampleArgs),
                                                 ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                                 ctypes.c_char_p, ctypes.c_int32]
        except (OSError, AttributeError) as e:
            _lib_error = f"cannot load the native sampler library {path}: {e}"
            raise OSError(_lib_error) from None
        _lib, _lib_path = lib, path
        return lib


def available() -> tuple[bool, str]:
    """(True, description) when the library loads and has a kernel for this CPU; else (False, why)."""
    try:
        lib = _load()
    except OSError as e:
        return False, str(e)
    names = isas()
    if not names:
        return False, "the native sampler library has no kernel that this CPU runs"
    bf16 = "avx512-bf16" in names
    return True, (f"native fused sampler ({_lib_path}); kernels: {', '.join(names)}; "
                  f"bf16 weights {'on vdpbf16ps' if bf16 else 'emulated in fp32 (no AVX-512 BF16)'}; "
                  f"{lib.impact_native_max_threads()} OpenMP threads by default")


def isas() -> list[str]:
    """Kernels compiled into the library that this CPU runs (best last)."""
    mask = _load().impact_native_isas()
    return [n for i, n in enumerate(ISA_NAMES) if mask >> i & 1]


# ---------------------------------------------------------------------------------------------
# Weight packing (layout: kernels/native/fused_sampler.h)

def pack_linear(weight: torch.Tensor, dtype: str) -> torch.Tensor:
    """Torch Linear weight [N, K] → the kernel's panel layout of W = weight.T [K, N], flat.

    fp32: panels of 64 columns (the last may be narrower), each row-major [K, nw].
    bf16: the same panels with k pairs interleaved, [K/2, nw, 2], as bf16.
    """
    n, k = weight.shape
    wm = weight.detach().to(torch.float32).t()                       # [K, N]
    nfull, tail = divmod(n, PANEL)
    if dtype == "fp32":
        parts = [wm[:, :nfull * PANEL].reshape(k, nfull, PANEL).permute(1, 0, 2).reshape(-1),
                 wm[:, nfull * PANEL:].reshape(-1)]
        return torch.cat(parts).contiguous()
    if dtype == "bf16":
        if k % 2:
            raise ValueError(f"bf16 packing needs an even K, got {k}")
        wp = wm.to(torch.bfloat16).reshape(k // 2, 2, n).permute(0, 2, 1)  # [K/2, N, 2]
        parts = [wp[:, :nfull * PANEL].reshape(k // 2, nfull, PANEL, 2).permute(1, 0, 2, 3).reshape(-1),
                 wp[:, nfull * PANEL:].reshape(-1)]
        return torch.cat(parts).contiguous()
    raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def check_head(head: DiffusionHead) -> None:
    w, c = head.input_proj.out_features, head.token_dim
    if w % 16 or c % 16:
        raise ValueError(f"the native sampler needs width and token_dim multiples of 16, got {w} and {c}")


class HeadPack:
    """The head's weights in the kernel's layout, plus the C struct that points at them.

    ``dtype`` is the model precision ("fp32" or "bf16"); ``weight_dtype`` is what the kernel
    reads: bf16 weights on a CPU without AVX-512 BF16 are rounded to bf16 and stored as fp32
    (same model, fp32 arithmetic).
    """

    def __init__(self, head: DiffusionHead, dtype: str = "fp32", weight_dtype: str | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        check_head(head)
        weight_dtype = weight_dtype or dtype
        self.dtype, self.weight_dtype = dtype, weight_dtype
        self.token_dim, self.width, self.depth = head.token_dim, head.input_proj.out_features, len(head.res_blocks)
        w = self.width

        def weight(lin):
            t = lin.weight.detach().float()
            if dtype == "bf16" and weight_dtype == "fp32":
                t = t.to(torch.bfloat16).float()
            return pack_linear(t, weight_dtype)

        def bias(lin, plus_one=None):
            b = lin.bias.detach().float().clone()
            if plus_one is not None:
                b[plus_one] += 1.0                     # modulate's (1 + scale), folded in
            return b.contiguous()

        linears = [head.input_proj]
        biases = [bias(head.input_proj)]
        for blk in head.res_blocks:
            ada = blk.adaLN_modulation[-1]
            linears += [ada, blk.mlp[0], blk.mlp[2]]
            biases += [bias(ada, slice(w, 2 * w)), bias(blk.mlp[0]), bias(blk.mlp[2])]
        fl = head.final_layer
        linears += [fl.adaLN_modulation[-1], fl.linear]
        biases += [bias(fl.adaLN_modulation[-1], slice(w, 2 * w)), bias(fl.linear)]
        self.weights = [weight(lin) for lin in linears]
        self.biases = biases
        if self.depth:
            self.ln_w = torch.stack([b.in_ln.weight.detach().float() for b in head.res_blocks]).contiguous()
            self.ln_b = torch.stack([b.in_ln.bias.detach().float() for b in head.res_blocks]).contiguous()
        else:
            self.ln_w = self.ln_b = torch.zeros(1)
        arr = (ImpactLinear * len(linears))()
        for i, (lin, wt, b) in enumerate(zip(linears, self.weights, self.biases)):
            arr[i] = ImpactLinear(lin.in_features, lin.out_features, wt.data_ptr(), b.data_ptr())
        self._linears = arr
        self.struct = ImpactHead(self.token_dim, w, self.depth, DTYPES[weight_dtype], arr, len(linears),
                                 self.ln_w.data_ptr(), self.ln_b.data_ptr())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.weights + self.biases)


def pack_head(head: DiffusionHead, dtype: str = "fp32") -> HeadPack:
    """Pack for the best kernel of this CPU: bf16 weights go to AMX or vdpbf16ps when the CPU has
    one, else they are rounded to bf16 and packed as fp32 for the fp32 kernels."""
    lib = _load()
    if dtype == "bf16" and lib.impact_native_best_isa(DTYPES["bf16"]) < 0:
        return HeadPack(head, "bf16", weight_dtype="fp32")
    return HeadPack(head, dtype)


# ---------------------------------------------------------------------------------------------
# Sampling

def _f32(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor, got {t.device}")
    return t.detach().to(torch.float32).contiguous()   # no copy when it already is


def sample(head_pack: HeadPack, c_emb_cond: torch.Tensor, c_emb_uncond: torch.Tensor | None,
           t_emb: torch.Tensor, coefs: dict, noise: torch.Tensor, guidance: float, temperature: float,
           *, threads: int | None = None, split: str = "auto", block_pairs: int = 0,
           isa: str | None = None) -> torch.Tensor:
    """The whole T̂-step loop in one native call; returns x_0 [R, C] (fp32).

    c_emb_cond/c_emb_uncond [R, w] = cond_embed(h) (uncond None: no CFG); t_emb [T̂, w] =
    time_embed(timestep_map); coefs: a dict with coef_x, coef_eps, logvar_mid, logvar_half [T̂]
    (``Schedule.tensors()`` is one); noise [T̂, R, C] as in ``sampler.sample_head``.
    threads: OpenMP threads (default torch.get_num_threads()); split: "rows" (each thread owns
    whole blocks of row pairs), "columns" (threads share every block, dividing each GEMM's
    columns: for few rows) or "auto"; block_pairs: rows per block (0: default); isa: force a
    kernel (ISA_NAMES). The result does not depend on threads, split or block_pairs.
    """
    lib = _load()
    steps, rows, c = noise.shape
    w = head_pack.width
    if c != head_pack.token_dim:
        raise ValueError(f"noise has {c} channels, the head {head_pack.token_dim}")
    cc = _f32(c_emb_cond, "c_emb_cond")
    cu = None if c_emb_uncond is None else _f32(c_emb_uncond, "c_emb_uncond")
    te = _f32(t_emb, "t_emb")
    nz = _f32(noise, "noise")
    if cc.shape != (rows, w) or (cu is not None and cu.shape != (rows, w)):
        raise ValueError(f"condition embeddings must be [{rows}, {w}], got {tuple(cc.shape)}"
                         + ("" if cu is None else f" and {tuple(cu.shape)}"))
    if te.shape != (steps, w):
        raise ValueError(f"t_emb must be [{steps}, {w}], got {tuple(te.shape)}")
    co = [_f32(coefs[k], k) for k in ("coef_x", "coef_eps", "logvar_mid", "logvar_half")]
    if any(t.shape != (steps,) for t in co):
        raise ValueError(f"schedule coefficients must have {steps} steps (noise has {steps})")
    x0 = torch.empty(rows, c, dtype=torch.float32)
    args = ImpactSampleArgs(rows, steps, cc.data_ptr(), None if cu is None else cu.data_ptr(), te.data_ptr(),
                            co[0].data_ptr(), co[1].data_ptr(), co[2].data_ptr(), co[3].data_ptr(),
                            nz.data_ptr(), float(guidance), float(temperature), x0.data_ptr())
    isa_id = ISA_AUTO if isa is None else ISA_NAMES.index(isa)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    nthreads = torch.get_num_threads() if threads is None else int(threads)
    err = ctypes.create_string_buffer(256)
    rc = lib.impact_native_sample(ctypes.byref(head_pack.struct), ctypes.byref(args), isa_id, nthreads,
                                  SPLITS[split], int(block_pairs), err, len(err))
    if rc != 0:
        raise RuntimeError(f"native sampler: {err.value.decode(errors='replace')}")
    return x0


class NativeHeadSampler:
    """``sample_head`` for one DiffusionHead through the native library.

    The condition and timestep embeddings (once per call, as the reference) run in torch; the
    T̂-step loop runs natively. The head's weights are packed (copied) at construction: build a
    new sampler after changing them. Raises OSError when the library is not available: check
    ``available()`` first and fall back to ``impact_rt.sampler.sample_head`` yourself.
    ``kernel`` names the kernel that runs (see ``ISA_NAMES``).
    """

    def __init__(self, head: DiffusionHead, dtype: str = "fp32", threads: int | None = None,
                 split: str = "auto", block_pairs: int = 0, isa: str | None = None):
        self.head = head
        self.pack = pack_head(head, dtype)
        self.dtype = dtype
        self.threads, self.split, self.block_pairs, self.isa = threads, split, block_pairs, isa
        if isa is None:
            best = _load().impact_native_best_isa(DTYPES[self.pack.weight_dtype])
            self.kernel = ISA_NAMES[best] if best >= 0 else "none"
        else:
            self.kernel = isa

    @torch.inference_mode()
    def sample(self, h_cond: torch.Tensor, h_uncond: torch.Tensor | None, noise: torch.Tensor,
               guidance: float, temperature: float, schedule_tensors: dict) -> torch.Tensor:
        """Same contract as ``sampler.sample_head(head, schedule_tensors, h_cond, h_uncond, noise,
        guidance, temperature)``: h [R, D], noise [T̂, R, C] → x_0 [R, C]."""
        head = self.head
        t_emb = head.time_embed(schedule_tensors["timestep_map"])
        if h_uncond is None:
            c_cond, c_uncond = head.cond_embed(h_cond), None
        else:  # one GEMM over cond then uncond rows, as the reference
            c_emb = head.cond_embed(torch.cat([h_cond, h_uncond]))
            c_cond, c_uncond = c_emb[:h_cond.shape[0]], c_emb[h_cond.shape[0]:]
        return sample(self.pack, c_cond, c_uncond, t_emb, schedule_tensors, noise, guidance, temperature,
                      threads=self.threads, split=self.split, block_pairs=self.block_pairs, isa=self.isa)
