"""One-time conversion of published checkpoints to the safetensors files `impact-rt eval` reads.

    python -m impact_rt.evaluation.convert vggish VGGISH.pth PCA.pth|PCA.npz OUT.safetensors
    python -m impact_rt.evaluation.convert vggish --no-pca VGGISH.pth OUT.safetensors
    python -m impact_rt.evaluation.convert state-dict IN.bin|IN.pth OUT.safetensors [--key model]

`vggish`: torchvggish's `vggish-10086976.pth` (features.*, embeddings.*) and its PCA parameters
(`vggish_pca_params-970ea276.pth`, or Google's `vggish_pca_params.npz`) -> one file with torchvggish's
module names: features.N.*, embeddings.N.*, pproc.pca_eigen_vectors [128, 128], pproc.pca_means
[128, 1]. `state-dict`: any checkpoint holding a state dict (e.g. a Hugging Face pytorch_model.bin,
or PANNs' checkpoint with --key model) -> safetensors.

Checkpoints are read with `torch.load(..., weights_only=True)`: only tensors, containers and (for the
PCA file, which holds numpy arrays) numpy's array reconstruction are allowed, never arbitrary
objects. .npz files are read with `allow_pickle=False`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import EvalError, UsageError

VGGISH_DIM = 128


def _torch_load(path: Path):
    import torch

    if not path.is_file():
        raise UsageError(f"not found: {path}")
    rec = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    numpy_globals = [rec, (rec, "numpy.core.multiarray._reconstruct"), (rec, "numpy._core.multiarray._reconstruct"),
                     np.ndarray, np.dtype, *{type(np.dtype(t)) for t in (np.float32, np.float64)}]
    try:
        with torch.serialization.safe_globals(numpy_globals):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EvalError(f"cannot read {path} with torch.load(weights_only=True): {' '.join(str(exc).split())[:300]}") from None


def _as_tensor(value, name: str):
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if isinstance(value, torch.Tensor):
        return value.detach().float().contiguous()
    raise UsageError(f"{name} is a {type(value).__name__}, not a tensor or array")


def _state_dict(obj, path: Path, key: str | None = None) -> dict:
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise UsageError(f"{path} has no entry {key!r}")
        obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise UsageError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def load_vggish_pca(pca: str | Path) -> dict:
    """{"pproc.pca_eigen_vectors": [128, 128], "pproc.pca_means": [128, 1]} float32 tensors from
    torchvggish's PCA .pth (numpy arrays inside) or Google's vggish_pca_params.npz."""
    pca = Path(pca)
    if pca.suffix == ".npz":
        if not pca.is_file():
            raise UsageError(f"not found: {pca}")
        with np.load(pca, allow_pickle=False) as z:
            params = {k: z[k] for k in z.files}
    else:
        params = _state_dict(_torch_load(pca), pca)
    for name in ("pca_eigen_vectors", "pca_means"):
        if name not in params:
            raise UsageError(f"{pca} has no {name} (keys: {', '.join(sorted(params)[:5])})")
    return {"pproc.pca_eigen_vectors": _as_tensor(params["pca_eigen_vectors"], "pca_eigen_vectors"),
            "pproc.pca_means": _as_tensor(params["pca_means"], "pca_means").reshape(-1, 1)}


def convert_vggish(weights: str | Path, pca: str | Path | None, out: str | Path) -> dict:
    """Write torchvggish's state dict (and PCA parameters) to `out`; returns the tensors written."""
    import torch
    from safetensors.torch import save_file

    from .external import _build_vggish, _key_report

    weights = Path(weights)
    state = {k: _as_tensor(v, k) for k, v in _state_dict(_torch_load(weights), weights).items()}
    if pca is not None:
        state.update(load_vggish_pca(pca))
    with torch.device("meta"):
        expected = _build_vggish(pca is not None).state_dict()
    detail = _key_report(expected, state)
    if detail:
        raise UsageError(f"{weights}{' + ' + str(pca) if pca is not None else ''} is not torchvggish's VGGish ({detail})")
    save_file(state, str(out))
    return state


def convert_state_dict(src: str | Path, out: str | Path, key: str | None = None) -> dict:
    """Write the state dict in checkpoint `src` (under `key` if given) to the safetensors file `out`."""
    from safetensors.torch import save_file

    src = Path(src)
    state = {k: v.detach().contiguous().clone() for k, v in _state_dict(_torch_load(src), src, key).items()
             if hasattr(v, "detach")}
    save_file(state, str(out))
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m impact_rt.evaluation.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    v = sub.add_parser("vggish", help="torchvggish .pth (+ PCA .pth/.npz) -> VGGish .safetensors for --vggish")
    v.add_argument("--no-pca", action="store_true", help="only the network (for Vggish(..., pca=False))")
    v.add_argument("files", nargs="+", metavar="FILE", help="VGGISH.pth [PCA.pth|PCA.npz] OUT.safetensors")
    s = sub.add_parser("state-dict", help="a checkpoint's state dict -> .safetensors (e.g. pytorch_model.bin)")
    s.add_argument("src", metavar="IN")
    s.add_argument("out", metavar="OUT.safetensors")
    s.add_argument("--key", help="take the state dict from this entry of the checkpoint (PANNs: model)")
    args = parser.parse_args(argv)
    try:
        out = args.files[-1] if args.what == "vggish" else args.out
        if not str(out).endswith(".safetensors"):
            raise UsageError(f"the output must be a .safetensors file: {out}")
        if args.what == "vggish":
            if len(args.files) != (2 if args.no_pca else 3):
                raise UsageError("give VGGISH.pth PCA.pth OUT.safetensors (or --no-pca VGGISH.pth OUT.safetensors)")
            n = len(convert_vggish(args.files[0], None if args.no_pca else args.files[1], out))
        else:
            n = len(convert_state_dict(args.src, out, args.key))
    except EvalError as exc:
        print(f"convert: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {n} tensors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
