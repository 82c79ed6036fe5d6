"""Caption decoding: greedy, beam search and sampling over a :class:`~pixlm.models.captioner.Captioner`.

The sampler owns the loop (method, beams, temperature, length); the network only maps (image, words so far)
→ next-word logits through its KV-cached ``start``/``step``. Every method runs the whole batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixlm.data.shapes import COLORS, POSITIONS, SHAPES, SIZES
from pixlm.models.captioner import DETAILED, EOS, FREE, PAD, UNK, Captioner

METHODS = ("greedy", "beam", "sample")


class DetailedGrammar:
    """The grammar of detailed captions as a next-word filter: "a <size> <colour> <shape> <position>" objects in
    strictly increasing reading order, joined by ",". Decoding under it can only write captions that parse."""

    def __init__(self, vocab: tuple[str, ...]) -> None:
        self.index = {w: i for i, w in enumerate(vocab)}
        self.vocab_size = len(vocab)
        self.phrases = [POSITIONS[(r, c)].split() for r in range(3) for c in range(3)]  # cell r*3+c → words
        missing = {"a", ",", *SIZES, *COLORS, *SHAPES} | {w for p in self.phrases for w in p}
        missing -= set(self.index)
        if missing:
            raise ValueError(f"this captioner cannot write detailed (shapes-scene) captions: its vocabulary lacks "
                             f"{sorted(missing)}; it was trained on other captions — caption without detailed mode "
                             f"(drop --detailed)")

    def next_words(self, words: list[str]) -> set[str]:
        """Words (and "<eos>") allowed after ``words``; {"<eos>"} once the prefix has left the grammar."""
        i, last = 0, -1
        while True:
            for options in (("a",), SIZES, COLORS, SHAPES):
                if i == len(words):
                    return set(options)
                if words[i] not in options:
                    return {"<eos>"}
                i += 1
            live = list(range(last + 1, 9))
            j = 0
            while True:  # no position phrase is a prefix of another, so a complete match is final
                done = [c for c in live if len(self.phrases[c]) == j]
                if done:
                    last = done[0]
                    break
                if i + j == len(words):
                    return {self.phrases[c][j] for c in live}
                live = [c for c in live if self.phrases[c][j] == words[i + j]]
                if not live:
                    return {"<eos>"}
                j += 1
            i += j
            if i == len(words):
                return {",", "<eos>"} if last < 8 else {"<eos>"}
            if words[i] != "," or last == 8:
                return {"<eos>"}
            i += 1

    def mask(self, rows: list[list[int]], vocab: tuple[str, ...], device: torch.device) -> torch.Tensor:
        """(B, V) bool: True where the next word is allowed after each row of word ids."""
        out = torch.zeros(len(rows), self.vocab_size, dtype=torch.bool, device=device)
        for b, ids in enumerate(rows):
            words = [vocab[i] for i in ids if i != EOS]
            allowed = self.next_words(words)
            out[b, [EOS if w == "<eos>" else self.index[w] for w in allowed]] = True
        return out


@dataclass
class CaptionSampler:
    method: str = "greedy"
    num_beams: int = 4  # beam search only
    length_penalty: float = 0.0  # beam search: final scores are log-prob / length ** length_penalty
    temperature: float = 1.0  # sampling only
    top_k: int = 0  # sampling only; 0 = the whole vocabulary
    max_length: int | None = None  # words including the control token; None = the model's max_length
    constrained: bool = True  # detailed mode: only write captions in the detailed grammar (DetailedGrammar)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if not (isinstance(self.num_beams, int) and 1 <= self.num_beams <= 64):
            raise ValueError(f"num_beams={self.num_beams!r} must be an integer in [1, 64]")
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError(f"temperature={self.temperature!r} must be in (0, 10]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} must be >= 0")

    @torch.no_grad()
    def generate(self, model: Captioner, image_tokens: torch.Tensor, detailed: bool = False,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Word ids per picture (without the control token, up to but excluding <eos>)."""
        limit = min(self.max_length or model.config.max_length, model.config.max_length)
        if limit < 2:
            raise ValueError(f"max_length={limit} leaves no room for a word")
        b = image_tokens.shape[0]
        first = torch.full((b,), DETAILED if detailed else FREE, dtype=torch.long, device=image_tokens.device)
        grammar = DetailedGrammar(model.config.vocab) if detailed and self.constrained else None
        if self.method == "beam":
            return _beam(model, image_tokens, first, self.num_beams, limit, self.length_penalty, grammar)
        return _left_to_right(model, image_tokens, first, limit, sample=self.method == "sample",
                              temperature=self.temperature, top_k=self.top_k, generator=generator, grammar=grammar)


def _never(logits: torch.Tensor) -> torch.Tensor:
    """Words a caption must never contain: padding, <unk> and the control tokens."""
    logits[..., [PAD, UNK, FREE, DETAILED]] = float("-inf")
    return logits


def _left_to_right(model: Captioner, image_tokens: torch.Tensor, first: torch.Tensor, limit: int, sample: bool,
                   temperature: float, top_k: int, generator: torch.Generator | None,
                   grammar: DetailedGrammar | None = None) -> list[list[int]]:
    state = model.start(image_tokens)
    word = first
    out: list[list[int]] = [[] for _ in range(len(first))]
    done = torch.zeros(len(first), dtype=torch.bool, device=first.device)
    for _ in range(limit - 1):
        logits, state = model.step(state, word)
        logits = _never(logits.float())  # (B, V)
        if grammar is not None:
            logits = logits.masked_fill(~grammar.mask(out, model.config.vocab, logits.device), float("-inf"))
        if sample:
            logits = logits / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            word = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
        else:
            word = logits.argmax(-1)
        for i in (~done).nonzero()[:, 0].tolist():
            if int(word[i]) != EOS:
                out[i].append(int(word[i]))
        done |= word == EOS
        if bool(done.all()):
            break
    return out


def _beam(model: Captioner, image_tokens: torch.Tensor, first: torch.Tensor, k: int, limit: int,
          length_penalty: float, grammar: DetailedGrammar | None = None) -> list[list[int]]:
    """Batched beam search; a finished beam keeps its score and only ever extends with <eos>."""
    b = len(first)
    dev = first.device
    state = model.start(image_tokens).select(torch.arange(b, device=dev).repeat_interleave(k))  # rows b*k
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    seqs = torch.empty(b, k, 0, dtype=torch.long, device=dev)
    lengths = torch.zeros(b, k, device=dev)  # words before <eos>
    finished = torch.zeros(b, k, dtype=torch.bool, device=dev)
    word = first.repeat_interleave(k)
    for _ in range(limit - 1):
        logits, state = model.step(state, word)
        logits = _never(logits.float())  # (B*K, V)
        if grammar is not None:
            allowed = grammar.mask(seqs.reshape(b * k, -1).tolist(), model.config.vocab, logits.device)
            logits = logits.masked_fill(~allowed, float("-inf"))
        logp = torch.log_softmax(logits, -1).view(b, k, -1)  # (B, K, V)
        v = logp.shape[-1]
        stay = torch.full_like(logp, float("-inf"))
        stay[..., EOS] = 0.0
        logp = torch.where(finished[..., None], stay, logp)
        cand = (scores[..., None] + logp).view(b, -1)  # (B, K*V)
        scores, flat = cand.topk(k, dim=-1)
        beam, word_bk = flat // v, flat % v  # (B, K)
        seqs = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, seqs.shape[-1])), word_bk[..., None]], -1)
        was_done = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_done & (word_bk != EOS)).float()
        finished = was_done | (word_bk == EOS)
        rows = (torch.arange(b, device=dev)[:, None] * k + beam).reshape(-1)
        state = state.select(rows)
        word = word_bk.reshape(-1)
        if bool(finished.all()):
            break
    final = scores / lengths.clamp_min(1.0) ** length_penalty
    best = final.argmax(-1)
    out = []
    for i in range(b):
        ids = seqs[i, int(best[i])].tolist()
        out.append(ids[: ids.index(EOS)] if EOS in ids else ids)
    return out


def caption_tokens(model: Captioner, image_tokens: torch.Tensor, detailed: bool = False, method: str = "greedy",
                   generator: torch.Generator | None = None, **options) -> list[str]:
    """Captions for (B, h, w) VQ tokens; ``options`` go to :class:`CaptionSampler` (num_beams, temperature, …)."""
    sampler = CaptionSampler(method=method, **options)
    model.eval()
    ids = sampler.generate(model, image_tokens, detailed=detailed, generator=generator)
    return [model.decode_ids(r) for r in ids]


__all__ = ["CaptionSampler", "DetailedGrammar", "caption_tokens", "METHODS"]
