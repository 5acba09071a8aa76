"""Best-of-K reranking: a small text–audio scorer on latent tokens picks one clip of K candidates.

IMPACT samples each clip from a fixed seed; some seeds render another event than the prompt's (a
growl for "thunder"). The scorer is a contrastive pair of encoders trained on our own captioned
latents (``training.train_scorer``; no outside classifier): the decoded tokens [B, N, C] of K
candidates per prompt are scored against the prompt's conditioner states and the best is kept,
before the VAE decoder and the vocoder run (only the chosen clip is turned into audio).

    scorer = Scorer(ScorerConfig(...))                 # or Scorer.from_bundle(path)
    s = scorer.score(tokens, text_states, text_mask)   # [B] higher = closer (Scorer.score)
    pick = choose(s, candidates=K)                     # [B // K] index of the best of each group

Candidate 0 of seed ``s`` is the plain seed ``s``: with K = 1 nothing changes. Candidates 1.. get
seeds from a fixed 64-bit mix of (s, j) (``candidate_seeds``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError, DictConfig

SCORER_WEIGHTS = "scorer.safetensors"
SCORER_CONFIG = "scorer.json"
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ScorerConfig(DictConfig):
    _what = "scorer config"
    token_dim: int = 128          # C·p·p of the generator's tokens
    grid_time: int = 64           # token grid: time rows …
    grid_freq: int = 4            # … × frequency columns (N = 256)
    text_dim: int = 384           # D_text of the conditioner's states
    dim: int = 192                # audio encoder width
    depth: int = 2                # audio encoder transformer blocks
    heads: int = 4
    embed: int = 256              # shared embedding size
    references: int = 0           # R reference captions (0: the score is the plain cosine)


class Scorer(nn.Module):
    """Audio tower: each time row of the token grid (its frequency tokens side by side) projected,
    a time position added, a small transformer, mean and max pooled.
    Text tower: masked mean of the conditioner states + a two-layer MLP. Both L2-normalised."""

    def __init__(self, cfg: ScorerConfig):
        super().__init__()
        self.cfg = cfg
        self.audio_in = nn.Linear(cfg.token_dim * cfg.grid_freq, cfg.dim)   # one vector per time row
        self.pos = nn.Parameter(torch.randn(1, cfg.grid_time, cfg.dim) * 0.02)
        block = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.audio_blocks = nn.TransformerEncoder(block, cfg.depth, enable_nested_tensor=False)
        self.audio_norm = nn.LayerNorm(cfg.dim)
        self.audio_out = nn.Linear(2 * cfg.dim, cfg.embed)
        self.text_mlp = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim * 2), nn.GELU(), nn.Linear(cfg.dim * 2, cfg.embed))
        self.log_scale = nn.Parameter(torch.tensor(2.659))   # log(1/0.07), CLIP's initial temperature
        # text-tower embeddings of the training corpus's captions, for the zero-shot form of the score
        self.register_buffer("reference", torch.zeros(cfg.references, cfg.embed))

    def embed_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if tokens.dim() != 3 or tokens.shape[1:] != (cfg.grid_time * cfg.grid_freq, cfg.token_dim):
            raise ConfigError(f"scorer expects tokens [B, {cfg.grid_time * cfg.grid_freq}, {cfg.token_dim}], "
                              f"got {tuple(tokens.shape)}")
        rows = tokens.float().reshape(tokens.shape[0], cfg.grid_time, cfg.grid_freq * cfg.token_dim)
        h = self.audio_norm(self.audio_blocks(self.audio_in(rows) + self.pos))
        pooled = torch.cat([h.mean(1), h.amax(1)], dim=-1)
        return F.normalize(self.audio_out(pooled), dim=-1)

    def embed_text(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if states.dim() != 3 or states.shape[-1] != self.cfg.text_dim or mask.shape != states.shape[:2]:
            raise ConfigError(f"scorer expects text states [B, L, {self.cfg.text_dim}] and a mask [B, L], "
                              f"got {tuple(states.shape)} and {tuple(mask.shape)}")
        m = mask[..., None].float()
        pooled = (states.float() * m).sum(1) / m.sum(1).clamp_min(1.0)
        return F.normalize(self.text_mlp(pooled), dim=-1)

    def score(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """How well each clip [B] matches its own prompt. Without reference captions: the cosine
        similarity. With them (zero-shot classification, as CLIP's): the log of the prompt's share
        of a softmax, at the learned temperature, over the prompt and the R reference captions, so
        that a clip closer to some other sound of the corpus (a growl, for "thunder") loses even
        when its cosine with the prompt is high."""
        a = self.embed_audio(tokens)
        cos = (a * self.embed_text(states, mask)).sum(-1)
        if self.cfg.references == 0:
            return cos
        scale = self.log_scale.exp().clamp(max=100.0)
        ref = torch.logsumexp(scale * a @ self.reference.float().T, dim=-1)
        return scale * cos - torch.logaddexp(scale * cos, ref)

    def with_references(self, states: torch.Tensor, mask: torch.Tensor, batch: int = 512) -> "Scorer":
        """A copy whose score is the zero-shot form over these captions' states [R, L, D]."""
        out = Scorer(dataclasses.replace(self.cfg, references=int(states.shape[0])))
        own = {k: v for k, v in self.state_dict().items() if k != "reference"}
        out.load_state_dict({**own, "reference": out.reference}, strict=True)
        with torch.no_grad():
            out.reference.copy_(torch.cat([self.embed_text(states[i:i + batch], mask[i:i + batch])
                                           for i in range(0, len(states), batch)]))
        return out.train(self.training)

    # -- bundle I/O ----------------------------------------------------------------------------
    def save(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """scorer.safetensors + scorer.json (the config and the stored dtype), as every bundle component."""
        from .audio import save_component
        save_component(self, str(directory), Path(SCORER_WEIGHTS).stem, self.cfg.to_dict(), dtype=dtype)

    @classmethod
    def from_bundle(cls, directory: str | Path) -> "Scorer | None":
        """The bundle's scorer, or None when it has none. Corrupt files raise ``BundleError``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from .bundle import BundleError
        d = Path(directory)
        w, c = d / SCORER_WEIGHTS, d / SCORER_CONFIG
        if not w.is_file() and not c.is_file():
            return None
        try:
            info = json.loads(c.read_text())
            info.pop("dtype", None)            # written by audio.save_component beside the config
            cfg = ScorerConfig.from_dict(info)
            scorer = cls(cfg)
            scorer.load_state_dict({k: v.float() for k, v in load_file(str(w)).items()})
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
            raise BundleError(f"model bundle {d}: scorer is missing or corrupt ({str(e).splitlines()[0]})") from None
        return scorer.eval()


def candidate_seeds(seeds: list[int], k: int) -> list[int]:
    """K seeds per seed, grouped: [s0c0, s0c1, …, s1c0, …]. Candidate 0 is the seed itself; the
    others come from splitmix64 of (seed, j), folded into 0..2^63−1."""
    out = []
    for s in seeds:
        out.append(s)
        for j in range(1, k):
            z = (s + j * 0x9E3779B97F4A7C15) & _MASK64
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            out.append((z ^ (z >> 31)) >> 1)
    return out


def choose(scores: torch.Tensor, candidates: int) -> torch.Tensor:
    """Index (into the flat batch) of the best-scored candidate of each group of ``candidates``."""
    if scores.dim() != 1 or scores.numel() % candidates:
        raise ConfigError(f"{scores.numel()} scores do not split into groups of {candidates}")
    groups = scores.reshape(-1, candidates)
    return torch.arange(groups.shape[0], device=scores.device) * candidates + groups.argmax(1)
