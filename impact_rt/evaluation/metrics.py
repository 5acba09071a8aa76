"""FD, KL and IS on YAMNet features, in the sense of audioldm_eval (numpy / scipy only).

- FD: Fréchet distance between Gaussians fitted to two sets of embeddings.
- KL: audioldm_eval's paired KL, KL(p_ref || p_gen) per matching file, averaged over files.
  `kl_softmax`: p = softmax over the 521 classes of the clip logits (a true KL between categorical
  distributions). `kl_sigmoid`: the same sum with p = sigmoid(logits) per class, as audioldm_eval's
  `kullback_leibler_divergence_sigmoid` (not a divergence in the strict sense: the complements
  1 - p are ignored; kept for comparison with published numbers).
- IS: exp(E_x KL(p(y|x) || p(y))) on softmax(clip logits) of the generated clips, optionally over
  shuffled splits (audioldm_eval uses 10 splits, seed 2020).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy.special import expit, log_softmax, softmax, xlogy

EPS = 1e-6  # audioldm_eval's EPS, added to the generated-side probabilities inside the log


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr sqrtm(s1 @ s2): scipy's sqrtm first; if it fails (singular, near-singular or complex
    results, typical when N < D), the symmetric form tr sqrt(A s2 A) with A = sqrtm(s1), computed
    from eigenvalues clipped at 0, which is always defined for covariance matrices."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        for offset in (0.0, 1e-6):
            eye = offset * np.eye(s1.shape[0])
            prod = (s1 + eye) @ (s2 + eye)
            covmean = scipy.linalg.sqrtm(prod)
            if not np.all(np.isfinite(covmean)):
                continue
            trace = np.trace(covmean)
            scale = max(1.0, abs(trace.real))
            residual = np.linalg.norm(covmean @ covmean - prod) / max(np.linalg.norm(prod), 1e-300)
            if abs(trace.imag) <= 1e-3 * scale and residual <= 1e-4:
                return float(trace.real)
    w1, v1 = np.linalg.eigh(s1)
    a = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    w = np.linalg.eigvalsh(a @ s2 @ a)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embeddings x [N, D] and y [M, D]:
    |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)), unbiased (N - 1) covariances.

    With fewer samples than dimensions both covariances live in the span of the centred samples;
    the trace term is computed in an orthonormal basis of that span (exact, and much smaller and
    better conditioned for sqrtm than D x D)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    for name, a in (("x", x), ("y", y)):
        if a.ndim != 2 or a.shape[0] < 2:
            raise ValueError(f"need at least 2 embeddings [N, D] in {name} to fit a Gaussian, got shape {a.shape}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding sizes differ: {x.shape[1]} vs {y.shape[1]}")
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mu1, y - mu2
    if xc.shape[0] + yc.shape[0] < x.shape[1]:
        u, sv, _ = np.linalg.svd(np.concatenate([xc, yc]).T, full_matrices=False)
        u = u[:, sv > sv.max(initial=0.0) * 1e-12] if sv.size and sv.max() > 0 else u[:, :0]
        xc, yc = xc @ u, yc @ u
    s1 = xc.T @ xc / (xc.shape[0] - 1)
    s2 = yc.T @ yc / (yc.shape[0] - 1)
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2)
    if s1.size:
        fd -= 2.0 * _trace_sqrt_product(s1, s2)
    return float(max(fd, 0.0))


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Row-wise sum_c p log p - p log(q + eps) (torch.nn.functional.kl_div(log(q + eps), p))."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return (xlogy(p, p) - p * np.log(q + eps)).sum(axis=-1)


def paired_kl(ref_logits: np.ndarray, gen_logits: np.ndarray) -> dict[str, float]:
    """Mean over pairs (row i of each) of KL(ref || gen), softmax and sigmoid variants."""
    ref, gen = np.asarray(ref_logits, np.float64), np.asarray(gen_logits, np.float64)
    if ref.shape != gen.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise ValueError(f"paired logits must be [N, C] alike, got {ref.shape} and {gen.shape}")
    return {
        "kl_softmax": float(kl_divergence(softmax(ref, axis=1), softmax(gen, axis=1)).mean()),
        "kl_sigmoid": float(kl_divergence(expit(ref), expit(gen)).mean()),
    }


def inception_score(logits: np.ndarray, splits: int = 1, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) over splits of exp(mean_x KL(p(y|x) || p(y))), p(y|x) = softmax(logits).
    With splits > 1 the rows are shuffled first (seeded), as in audioldm_eval."""
    x = np.asarray(logits, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"need logits [N, C] with N >= 1, got shape {x.shape}")
    splits = int(splits)
    if not 1 <= splits <= x.shape[0]:
        raise ValueError(f"splits must be in 1..{x.shape[0]} (the number of clips), got {splits}")
    if splits > 1:
        x = x[np.random.default_rng(seed).permutation(x.shape[0])]
    scores = []
    n = x.shape[0]
    for k in range(splits):
        part = x[k * n // splits:(k + 1) * n // splits]
        logp = log_softmax(part, axis=1)
        p = np.exp(logp)
        logq = np.log(p.mean(axis=0, keepdims=True))
        scores.append(float(np.exp((p * (logp - logq)).sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))
