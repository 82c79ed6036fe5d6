"""A BERT encoder (MiniLM's architecture) small enough to read in one sitting, loading Hugging Face weights as they are.

The parameter names match ``transformers.BertModel`` (``embeddings.*``, ``encoder.layer.N.attention.self.query``, …),
so a BERT folder's ``model.safetensors`` loads with ``load_state_dict(strict=True)``; the pooler is not used and not
built. Loading this module instead of ``transformers.AutoModel`` skips about 2.5 s of imports and class resolution
on every cold start. The tokenizer is the folder's ``tokenizer.json`` read by the ``tokenizers`` library directly.

Speed-ups (packed weights, other attention kernels) are swaps on these same modules: see ``pixlm.inference``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.checkpoint import CheckpointError


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in raw.items() if k in known})
        if raw.get("model_type", "bert") != "bert" or cfg.hidden_act != "gelu" or cfg.position_embedding_type != "absolute":
            raise CheckpointError(f"{path}: only BERT with gelu and absolute positions is supported by pixlm.text.bert, "
                                  f"got model_type={raw.get('model_type')!r}, hidden_act={cfg.hidden_act!r}, "
                                  f"position_embedding_type={cfg.position_embedding_type!r}")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise CheckpointError(f"{path}: hidden_size={cfg.hidden_size} is not divisible by "
                                  f"num_attention_heads={cfg.num_attention_heads}")
        return cfg


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        # every prompt is one segment: token type 0 everywhere
        x = self.word_embeddings(ids) + self.position_embeddings.weight[:t] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)  # (B, T, C)


class BertSelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, -1).transpose(1, 2)  # (B, H, T, Dh)

        y = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                           attn_mask=bias)
        return y.transpose(1, 2).reshape(b, t, d)


class BertSelfOutput(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)  # post-norm


class BertAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)


class BertIntermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT's "gelu"


class BertOutput(BertSelfOutput):
    def __init__(self, c: BertConfig) -> None:
        super().__init__(c)
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)


class BertLayer(nn.Module):
    """Post-norm BERT layer: x = LN(x + attn(x)); x = LN(x + W2·gelu(W1·x))."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, bias), x)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))


class BertModel(nn.Module):
    """token ids (B, T) + attention mask (B, T) → last hidden states (B, T, C)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embeddings(input_ids)
        bias = None
        if attention_mask is not None:  # additive: 0 where attended, dtype-min on padding
            keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
            bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    @classmethod
    def from_folder(cls, folder: str | Path) -> "BertModel":
        """A Hugging Face BERT folder (``config.json`` + ``model.safetensors``) → this module, weights loaded strictly."""
        from safetensors.torch import load_file

        folder = Path(folder)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{folder} has no model.safetensors (pixlm loads BERT weights only from safetensors)")
        model = cls(BertConfig.from_json(folder / "config.json"))
        state = {k.removeprefix("bert."): v for k, v in load_file(str(weights)).items()}
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{weights} does not match a BERT of {folder / 'config.json'}: {e}") from None
        return model.eval()


class BertTokenizer:
    """The folder's ``tokenizer.json`` (WordPiece, lower-casing, [CLS] … [SEP]) with padding and truncation."""

    def __init__(self, folder: str | Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{folder} has no tokenizer.json")
        self.tok = Tokenizer.from_file(str(path))
        self.tok.enable_truncation(max_length)
        pad_id = self.tok.token_to_id("[PAD]")
        self.tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        self.max_length = max_length

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) as (B, T) tensors; T is the longest prompt's length (at most ``max_length``)."""
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"prompts must be strings, got {type(p).__name__}")
            try:
                p.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"prompt {p[:40]!r} is not valid Unicode text ({e.reason} at position {e.start})") from None
        enc = self.tok.encode_batch(prompts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
        return ids, mask

