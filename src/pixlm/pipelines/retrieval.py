"""Retrieval-augmented drawing: the prompt finds training pictures, the generator redraws part of one.

A small generator trained on a few thousand real pictures learns their palettes and layouts long before it learns
what each one looks like, so from the name alone it draws a plausible blur. Semi-parametric generators keep the
training pictures beside the network and let the prompt retrieve from them (kNN-Diffusion, Sheynin et al. 2022;
Retrieval-Augmented Diffusion Models, Blattmann et al. 2022; Re-Imagen, Chen et al. 2022). Here the memory is a
:class:`RetrievalIndex` in the model folder (``retrieval/``): every training picture's VQ tokens and one sentence
embedding of its captions, by the pipeline's own text encoder (MiniLM, mean-pooled and normalised, the way the
sentence-transformers model it is was trained to be used).

At generation, for each image (:meth:`RetrievalIndex.pick`):

1. the prompt (as the pipeline read it) is embedded the same way and compared with every picture (cosine);
   a prompt that names a group of the index ("…, twemoji style": the index's ``groups`` column, the emoji world's
   styles) is compared with that group's pictures only. Group phrases are left out of both embeddings, so one
   emoji's pictures in every style embed alike and a prompt that names no style draws any of them;
2. the score is that cosine plus ``lexical`` × the word overlap of the prompt with the picture's label (hybrid
   dense + lexical search: the embedding hears "light" and "medium-light skin tone" as nearly the same); one of
   the ``top_k`` best is drawn with probability ∝ exp(score / ``temperature``), from the image's seed: near-ties
   (the same emoji in four styles) are drawn about equally, a clearly worse match rarely;
3. a random ``keep`` share of its tokens is kept and frozen, the rest start masked, and the masked generator fills
   them in conditioned on the prompt, on its usual schedule (the same loop as inpainting).

So a name the model was trained on comes out recognisable and each seed gives a different style, variant or redraw;
an unseen name starts from the nearest pictures in meaning and is redrawn toward the prompt. ``retrieve=False``
(``pixlm generate --no-retrieve``) draws from the prompt alone. Settings live in ``model_index.json``
``defaults.retrieval`` (``top_k``, ``temperature``, ``keep``, ``lexical``); the index is built by
``pixlm.train.retrieval``.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
from pathlib import Path
from typing import Any, Callable

import torch

from pixlm.checkpoint import CheckpointError, atomic_write_dir, read_json, write_json

RETRIEVAL_DEFAULTS = {"top_k": 8, "temperature": 0.03, "keep": 0.5, "lexical": 0.3}
_GROUP_PHRASE = re.compile(r",?\s*\b(?P<group>[a-z0-9_-]+) style\b", re.IGNORECASE)


def check_retrieval_settings(settings: dict) -> dict:
    """``settings`` with :data:`RETRIEVAL_DEFAULTS` filled in; a clear error for an unknown key or a bad value."""
    unknown = sorted(set(settings) - set(RETRIEVAL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown retrieval settings {unknown}; known: {sorted(RETRIEVAL_DEFAULTS)}")
    out = {**RETRIEVAL_DEFAULTS, **settings}
    k, t, keep = out["top_k"], out["temperature"], out["keep"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"retrieval top_k={k!r} must be a positive integer")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t <= 10):
        raise ValueError(f"retrieval temperature={t!r} must be a number in (0, 10]")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not (0 <= keep <= 1):
        raise ValueError(f"retrieval keep={keep!r} must be a number in [0, 1]")
    lex = out["lexical"]
    if isinstance(lex, bool) or not isinstance(lex, (int, float)) or not (0 <= lex <= 10):
        raise ValueError(f"retrieval lexical={lex!r} must be a number in [0, 10]")
    return out


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def sentence_embeddings(text_encoder: Any, texts: list[str], batch: int = 256, use_cache: bool = False,
                        progress: str | None = None) -> torch.Tensor:
    """(len(texts), D) float32 unit vectors: the encoder's last hidden states mean-pooled over real tokens
    (``use_cache``: through the encoder's prompt cache, for prompts it has just encoded; ``progress``: a tqdm bar
    with that description)."""
    starts: Any = range(0, len(texts), batch)
    if progress is not None:  # index building; generation passes none and skips the bar
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress)
    out = []
    for i in starts:
        states, mask = text_encoder.encode(texts[i:i + batch], use_cache=use_cache)
        m = mask.unsqueeze(-1).to(torch.float32)
        pooled = (states.float() * m).sum(1) / m.sum(1).clamp_min(1.0)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, text_encoder.dim)


def text_encoder_id(text_encoder: Any) -> str:
    """What an index's embeddings depend on: the encoder's kind, its local path for a Hugging Face folder."""
    cfg = text_encoder.config
    return f"{cfg.type}:{cfg.path}" if cfg.path else cfg.type


def strip_group(text: str, groups: set[str]) -> str:
    """``text`` without its "<group> style" phrase for a group of ``groups`` ("cat, noto style" → "cat")."""
    if not groups:
        return text
    out = _GROUP_PHRASE.sub(lambda m: "" if m.group("group").lower() in groups else m.group(0), text)
    return re.sub(r"\s+", " ", out).strip(" ,") or text


def named_group(prompt: str, groups: set[str]) -> str | None:
    """The group a prompt names with "<group> style" when the index has it ("cat, noto style" → "noto")."""
    for m in _GROUP_PHRASE.finditer(prompt):
        g = m.group("group").lower()
        if g in groups:
            return g
    return None


class RetrievalIndex:
    """Training pictures as the generator's tokens, with a sentence embedding and a group (style) each."""

    def __init__(self, tokens: torch.Tensor, embeddings: torch.Tensor, captions: list[str],
                 groups: list[str] | None = None, text_encoder_id: str = "") -> None:
        if tokens.ndim != 2 or embeddings.ndim != 2 or len(tokens) != len(embeddings) or len(captions) != len(tokens):
            raise ValueError(f"index parts disagree: tokens {tuple(tokens.shape)}, embeddings "
                             f"{tuple(embeddings.shape)}, {len(captions)} captions (one row each)")
        if len(tokens) == 0:
            raise ValueError("a retrieval index needs at least one picture")
        groups = groups if groups is not None else [""] * len(tokens)
        if len(groups) != len(tokens):
            raise ValueError(f"{len(groups)} groups for {len(tokens)} pictures")
        self.tokens = tokens.to(torch.int16) if tokens.dtype != torch.int16 else tokens
        self.embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1).to(torch.float16)
        self._embeddings32 = self.embeddings.float()  # what searches multiply by, converted once, not per image
        self.captions, self.groups = list(captions), list(groups)
        self.group_names = {g for g in self.groups if g}
        self._group_rows = {g: torch.tensor([i for i, x in enumerate(self.groups) if x == g])
                            for g in self.group_names}
        self.text_encoder_id = text_encoder_id
        self._words: list[frozenset[str]] | None = None  # each label's words, made on first lexical search

    def __len__(self) -> int:
        return len(self.tokens)

    # ------------------------------------------------------------------ search
    def nearest(self, query: torch.Tensor, k: int, group: str | None = None, text: str | None = None,
                lexical: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, rows) of the ``k`` pictures nearest to one query embedding (D,), within ``group``.

        The score is the cosine similarity plus, when ``text`` is given, ``lexical`` × the word overlap (Jaccard) of
        ``text`` with the picture's label, over the 64 nearest by cosine (hybrid dense + lexical search, as RAG
        systems do: a sentence embedding hears "light skin tone" and "medium-light skin tone" as nearly the same,
        the words do not)."""
        rows = self._group_rows.get(group) if group else torch.arange(len(self))
        sims = (self._embeddings32 @ query.float())[rows]
        if text is not None and lexical > 0:
            shortlist = sims.topk(min(max(64, k), len(sims)))
            words = _words(text)
            bonus = torch.tensor([_jaccard(words, self._label_words(int(rows[i]))) for i in shortlist.indices])
            sims, rows = shortlist.values + lexical * bonus, rows[shortlist.indices]
        top = sims.topk(min(k, len(sims)))
        return top.values, rows[top.indices]

    def _label_words(self, row: int) -> frozenset[str]:
        if self._words is None:
            self._words = [_words(c) for c in self.captions]
        return self._words[row]

    def pick(self, prompts: list[str], embed: Callable[[list[str]], torch.Tensor], seeds: list[int],
             settings: dict) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """For each image: (init tokens (B, N) long, keep mask (B, N) bool, the picture drawn). ``embed(texts)``
        gives the sentence embeddings (B, D) of texts (the prompts less any group phrase). Every draw comes from
        the image's seed alone, so image ``i`` of seed ``s`` is the one a one-image call with ``s + i`` makes.
        (``TextToImagePipeline.attach_retrieval`` has checked that the generator draws as many tokens.)"""
        cfg = check_retrieval_settings(settings)
        num_tokens = self.tokens.shape[1]
        n_keep = int(round(cfg["keep"] * num_tokens))
        texts = [strip_group(p, self.group_names) for p in prompts]
        queries = embed(texts)
        tokens, keep, chosen = [], [], []
        for prompt, text, q, seed in zip(prompts, texts, queries, seeds):
            # hashed: Random("retrieve:0"), Random("retrieve:1"), ... start with correlated draws
            rng = random.Random(int.from_bytes(hashlib.sha256(f"retrieve:{seed}".encode()).digest()[:8], "big"))
            sims, rows = self.nearest(q, cfg["top_k"], named_group(prompt, self.group_names), text, cfg["lexical"])
            weights = [math.exp((float(s) - float(sims[0])) / cfg["temperature"]) for s in sims]
            row = int(rows[rng.choices(range(len(rows)), weights=weights)[0]])
            mask = torch.zeros(num_tokens, dtype=torch.bool)
            mask[rng.sample(range(num_tokens), n_keep)] = True
            tokens.append(self.tokens[row].long())
            keep.append(mask)
            chosen.append(row)
        return torch.stack(tokens), torch.stack(keep), chosen

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            save_file({"tokens": self.tokens.contiguous(), "embeddings": self.embeddings.contiguous()},
                      str(tmp / "index.safetensors"))
            write_json(tmp / "index.json", {"kind": "retrieval_index", "text_encoder": self.text_encoder_id,
                                            "captions": self.captions, "groups": self.groups})

        return atomic_write_dir(directory, write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "RetrievalIndex":
        from safetensors.torch import load_file

        root = Path(directory)
        meta = read_json(root / "index.json")
        if meta.get("kind") != "retrieval_index":
            raise CheckpointError(f"{root}/index.json is not a retrieval index (kind={meta.get('kind')!r})")
        t = load_file(str(root / "index.safetensors"))
        return cls(t["tokens"], t["embeddings"], meta["captions"], meta.get("groups"), meta.get("text_encoder", ""))
