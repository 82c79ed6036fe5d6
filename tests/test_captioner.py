"""Captioner: words and vocabulary, cached decoding = teacher forcing, tiny training + all three decoders,
detailed captions ↔ scenes, persistence, and the pipeline's lazy captioner."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from pixlm.checkpoint import CheckpointError
from pixlm.data.detailed import detailed_caption, parse_detailed, same_scene, scene_prompt
from pixlm.data.shapes import COLORS, Scene, random_scene, render
from pixlm.data.specs import SpecError
from pixlm.models.vq import VQModel
from pixlm.models.captioner import (DETAILED, EOS, SPECIALS, UNK, Captioner, CaptionerConfig, NoCaptionerError,
                                    build_vocab, caption_loss, join_words, pad_ids, split_words, tokenizer_fingerprint)
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.sampling.captioning import CaptionSampler, caption_tokens
from pixlm.testing import tiny_pipeline
from pixlm.train.captioner import CaptionerTrainConfig, attach_captioner, train_captioner

WORDS = build_vocab([detailed_caption(random_scene(random.Random(i))) for i in range(200)])


def tiny_captioner(image_vocab: int = 64, seed: int = 0, **kw) -> Captioner:
    torch.manual_seed(seed)
    cfg = dict(vocab=WORDS, image_vocab_size=image_vocab, dim=32, encoder_layers=1, decoder_layers=1, heads=2)
    return Captioner(CaptionerConfig(**{**cfg, **kw})).eval()


# ---------------------------------------------------------------------------------------------- words
def test_words_split_and_join_round_trip() -> None:
    text = "a large red circle in the top left, a small blue square at the bottom"
    words = split_words(text.upper() + ".")
    assert words[:6] == ["a", "large", "red", "circle", "in", "the"] and "," in words and "." not in words
    assert join_words(words) == text


def test_vocab_starts_with_specials_and_unknown_words_map_to_unk() -> None:
    assert WORDS[: len(SPECIALS)] == SPECIALS
    m = tiny_captioner()
    ids = m.encode_text("a zebra circle", detailed=True)
    assert ids[0] == DETAILED and ids[-1] == EOS and ids[2] == UNK
    assert m.decode_ids(ids[1:]) == "a <unk> circle"
    with pytest.raises(ValueError, match="special tokens"):
        CaptionerConfig(vocab=("a", "b"))


def test_cached_steps_equal_teacher_forcing() -> None:
    m = tiny_captioner()
    img = torch.randint(0, 64, (3, 8, 8))
    words = pad_ids([m.encode_text("a large red circle in the center", True)] * 3)
    full = m(img, words)  # (B, T, V)
    state, steps = m.start(img), []
    for t in range(words.shape[1]):
        logits, state = m.step(state, words[:, t])
        steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)


def test_bad_image_tokens_are_named() -> None:
    m = tiny_captioner()
    with pytest.raises(ValueError, match="image tokens must be in"):
        m.encode_image(torch.full((1, 8, 8), 64))
    with pytest.raises(ValueError, match="64 image tokens"):
        m.encode_image(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="method="):
        CaptionSampler(method="nucleus")


# ---------------------------------------------------------------------------------------------- decoding
def _memorised(steps: int = 120) -> tuple[Captioner, torch.Tensor, list[str]]:
    """A tiny captioner trained until it reproduces two detailed captions for two fixed token grids."""
    m = tiny_captioner().train()
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 64, (2, 8, 8), generator=gen)
    texts = [detailed_caption(random_scene(random.Random(s))) for s in (1, 2)]
    words = pad_ids([m.encode_text(t, detailed=True) for t in texts])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = caption_loss(m, img, words)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), img, texts


@pytest.fixture(scope="module")
def memorised() -> tuple[Captioner, torch.Tensor, list[str]]:
    return _memorised()


def test_greedy_and_beam_recover_what_was_learned(memorised) -> None:
    m, img, texts = memorised
    assert caption_tokens(m, img, detailed=True, method="greedy") == texts
    assert caption_tokens(m, img, detailed=True, method="beam", num_beams=3) == texts


def test_beam_of_one_is_greedy_and_sampling_is_seeded() -> None:
    m = tiny_captioner(seed=3)
    img = torch.randint(0, 64, (4, 8, 8), generator=torch.Generator().manual_seed(1))
    greedy = caption_tokens(m, img, method="greedy", max_length=12)
    assert caption_tokens(m, img, method="beam", num_beams=1, max_length=12) == greedy
    s1 = caption_tokens(m, img, method="sample", generator=torch.Generator().manual_seed(5), max_length=12)
    s2 = caption_tokens(m, img, method="sample", generator=torch.Generator().manual_seed(5), max_length=12)
    assert s1 == s2 and all(isinstance(s, str) for s in s1)
    assert all(len(split_words(s)) <= 11 for s in s1)  # max_length counts the control token


def test_beam_finds_a_sequence_at_least_as_likely_as_greedy() -> None:
    m = tiny_captioner(seed=4)
    img = torch.randint(0, 64, (3, 8, 8), generator=torch.Generator().manual_seed(2))

    def logprob(text: str, row: int) -> float:
        ids = m.encode_text(text)
        if len(ids) == m.config.max_length and ids[-1] != EOS:
            return float("-inf")
        with torch.no_grad():
            logits = m(img[row:row + 1], torch.tensor([ids[:-1]]))
        return float(torch.log_softmax(logits, -1)[0, torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())

    greedy = caption_tokens(m, img, method="greedy", max_length=10)
    beam = caption_tokens(m, img, method="beam", num_beams=4, max_length=10)
    for i in range(3):
        assert logprob(beam[i], i) >= logprob(greedy[i], i) - 1e-4


def test_grammar_constrained_detailed_captions_always_parse() -> None:
    from pixlm.sampling.captioning import DetailedGrammar
    from pixlm.train.captioner import vocabulary

    m = tiny_captioner(seed=5, vocab=vocabulary(0, 300))  # random weights: only the grammar keeps it in shape
    img = torch.randint(0, 64, (6, 8, 8), generator=torch.Generator().manual_seed(3))
    for method in ("greedy", "beam", "sample"):
        texts = caption_tokens(m, img, detailed=True, method=method, generator=torch.Generator().manual_seed(0))
        for text in texts:
            objs = parse_detailed(text)  # raises if the caption left the grammar
            cells = [(o["row"], o["col"]) for o in objs]
            assert cells == sorted(cells) and len(objs) >= 1
    g = DetailedGrammar(m.config.vocab)
    assert g.next_words("a large red circle in the top".split()) == {"left", "right"}
    assert g.next_words("a small blue square in the bottom right".split()) == {"<eos>"}
    assert g.next_words("a large red circle at the top , a small".split()) == set(COLORS)
    with pytest.raises(ValueError, match="cannot write detailed.*drop --detailed"):
        DetailedGrammar(SPECIALS + ("a",))


# ---------------------------------------------------------------------------------------------- detailed captions
def test_detailed_caption_round_trips_on_many_scenes() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        s = random_scene(rng)
        text = detailed_caption(s)
        assert same_scene(parse_detailed(text), s.to_dicts())
        assert same_scene(parse_detailed(scene_prompt(s)), s.to_dicts())
    assert detailed_caption(Scene([])) == "nothing" and parse_detailed("nothing") == []


def test_detailed_caption_is_canonical_and_ordered() -> None:
    s = Scene.from_dicts([{"shape": "square", "color": "blue", "size": "small", "row": 2, "col": 1},
                          {"shape": "circle", "color": "red", "size": "large", "row": 0, "col": 0}])
    assert detailed_caption(s) == "a large red circle in the top left, a small blue square at the bottom"


def test_parse_detailed_rejects_incomplete_or_clashing_text() -> None:
    with pytest.raises(SpecError, match="lacks"):
        parse_detailed("a red circle in the top left")
    with pytest.raises(SpecError, match="share a cell"):
        parse_detailed("a large red circle in the top left, a small blue square in the top left")
    with pytest.raises(SpecError):
        parse_detailed("a large red circle above a small blue square")


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "vq"
    tiny_pipeline().vq.save_pretrained(path)
    return path


def _train_cfg(tokenizer: Path, out: Path, steps: int, **kw) -> CaptionerTrainConfig:
    base = dict(out=str(out), tokenizer=str(tokenizer), pool=48, vocab_scenes=200, steps=steps, batch_size=8, dim=32,
                encoder_layers=1, decoder_layers=1, heads=2, log_every=2, eval_every=4, eval_n=8, ckpt_every=2,
                warmup=2)
    return CaptionerTrainConfig(**{**base, **kw})


def test_tiny_training_resumes_and_decodes_with_every_method(tiny_tokenizer: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = train_captioner(_train_cfg(tiny_tokenizer, run, steps=4))
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and "detailed_acc" in rows[-1]
    final = train_captioner(_train_cfg(tiny_tokenizer, run, steps=6, resume=True))
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and first == final
    cap = Captioner.from_pretrained(final)
    assert cap.config.tokenizer_id == tokenizer_fingerprint(tiny_pipeline().vq)
    assert sum(p.numel() for p in cap.parameters()) < 2_000_000
    img = torch.randint(0, cap.config.image_vocab_size, (2, 8, 8))
    for method in ("greedy", "beam", "sample"):
        out = caption_tokens(cap, img, detailed=method == "beam", method=method,
                             generator=torch.Generator().manual_seed(0))
        assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_time_budget_stops_early_but_still_writes_the_model(tiny_tokenizer: Path, tmp_path: Path) -> None:
    final = train_captioner(_train_cfg(tiny_tokenizer, tmp_path / "run", steps=50, max_minutes=1e-6))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and "max_minutes" in rows[-1]["stopped"]
    assert (final / "model.safetensors").is_file()
    train_captioner(_train_cfg(tiny_tokenizer, tmp_path / "run2", steps=50, stop_after=3))
    rows = [json.loads(line) for line in (tmp_path / "run2" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["stopped"] == "stop_after=3 reached"


def test_generated_and_degraded_pictures_are_labelled_by_what_they_show(tiny_tokenizer: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Issue 22 part 4: the generator's own pictures, labelled by the combined judge (pictures read as empty or
    crowded are left out), and degraded renders join the pool; a captioner continues from a trained one
    (init_from) with its vocabulary."""
    from pixlm.eval import judge as judge_mod
    from pixlm.train.captioner import array_to_scene, build_extra_pool

    model = tmp_path / "model"
    tiny_pipeline().save_pretrained(model)
    one = [{"shape": "square", "color": "blue", "size": "small", "row": 2, "col": 1}]
    readings = iter([[], one * 5] + [one] * 1000)  # the first two pictures: empty, then five objects
    seen: list = []

    def read_many(self, images):
        seen.extend(im.size for im in images)
        return [judge_mod.JudgeReading(objects=o, geometric=[], learned=o, agree=False, confidence=1.0)
                for o in (next(readings) for _ in images)]

    monkeypatch.setattr(judge_mod.Judge, "read_many", read_many)
    run = tmp_path / "run"
    first = train_captioner(_train_cfg(tiny_tokenizer, run, steps=2, generated_from=str(model), generated=5,
                                       degraded=3, extra_fraction=0.5))
    extra = build_extra_pool(_train_cfg(tiny_tokenizer, run, steps=2, generated=5, degraded=3),
                             VQModel.from_pretrained(tiny_tokenizer), run)  # the cached pool
    assert extra["tokens"].shape == (8, 64) and extra["objects"].shape == (8, 4, 5)
    assert all(array_to_scene(row).to_dicts() == one for row in extra["objects"][:5])  # what the judge saw
    assert seen[0] == (64, 64)  # it read decoded pictures
    again = train_captioner(_train_cfg(tiny_tokenizer, tmp_path / "run2", steps=2, init_from=str(first)))
    assert Captioner.from_pretrained(again).config.vocab == Captioner.from_pretrained(first).config.vocab
    with pytest.raises(ValueError, match="generated_from"):
        train_captioner(_train_cfg(tiny_tokenizer, tmp_path / "run3", steps=2, generated=4))


# ---------------------------------------------------------------------------------------------- persistence + pipeline
def _captioner_for(pipe: TextToImagePipeline) -> Captioner:
    return tiny_captioner(image_vocab=pipe.vq.vocab_size, tokenizer_id=tokenizer_fingerprint(pipe.vq))


def test_save_load_float16_round_trip(tmp_path: Path) -> None:
    m = tiny_captioner()
    m.save_pretrained(tmp_path / "c", dtype=torch.float16)
    back = Captioner.from_pretrained(tmp_path / "c")
    assert back.config == m.config
    img = torch.randint(0, 64, (2, 8, 8))
    words = pad_ids([m.encode_text("a large red circle", True)] * 2)
    assert torch.allclose(back(img, words), m(img, words), atol=2e-2)
    assert (tmp_path / "c" / "model.safetensors").stat().st_size < 200_000


def test_pipeline_caption_loads_lazily_and_is_carried_by_save(tmp_path: Path) -> None:
    pipe = tiny_pipeline()
    img = render(random_scene(random.Random(0)))
    assert not pipe.has_captioner()
    with pytest.raises(NoCaptionerError, match="no captioner"):
        pipe.caption(img)
    pipe.captioner = _captioner_for(pipe)
    expected = pipe.caption([img, img], detailed=True, method="beam", num_beams=2)
    pipe.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "captioner" / "config.json").is_file()
    loaded = TextToImagePipeline.from_pretrained(tmp_path / "m")
    assert loaded.has_captioner() and loaded.captioner is None  # not loaded until used
    assert loaded.caption([img, img], detailed=True, method="beam", num_beams=2) == expected
    assert loaded.caption(img, method="sample", seed=1) == loaded.caption(img, method="sample", seed=1)
    resaved = loaded.save_pretrained(tmp_path / "m2")
    assert (resaved / "captioner" / "model.safetensors").is_file()


def test_captioner_from_another_tokenizer_is_refused(tmp_path: Path) -> None:
    pipe = tiny_pipeline()
    pipe.captioner = tiny_captioner(image_vocab=pipe.vq.vocab_size, tokenizer_id="0123456789abcdef")
    pipe.save_pretrained(tmp_path / "m")
    loaded = TextToImagePipeline.from_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="trained on tokenizer 0123456789abcdef"):
        loaded.caption(render(random_scene(random.Random(0))))
    pipe.captioner.save_pretrained(tmp_path / "cap")
    with pytest.raises(CheckpointError, match="trained on tokenizer"):
        attach_captioner(tmp_path / "cap", tmp_path / "m")


def test_attach_copies_a_matching_captioner_as_float16(tmp_path: Path) -> None:
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "m")
    _captioner_for(pipe).save_pretrained(tmp_path / "cap")
    attach_captioner(tmp_path / "cap", tmp_path / "m")
    loaded = TextToImagePipeline.from_pretrained(tmp_path / "m")
    assert loaded.has_captioner() and isinstance(loaded.caption(render(random_scene(random.Random(1)))), list)
    with pytest.raises(CheckpointError, match="not a model folder"):
        attach_captioner(tmp_path / "cap", tmp_path)


# ---------------------------------------------------------------------------------------------- metrics
def test_bleu_matches_hand_computed_values() -> None:
    from pixlm.eval.caption_metrics import corpus_bleu

    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(1.0)
    # precisions 4/5, 3/4, 2/3, 1/2 and no brevity penalty
    assert corpus_bleu(["a b c d e"], [["a b c d f"]]) == pytest.approx(0.2 ** 0.25)
    # all n-grams match but the candidate is half the reference length: BP = exp(1 - 8/4)
    assert corpus_bleu(["a b c d"], [["a b c d f g h i"]]) == pytest.approx(math.exp(-1))
    assert corpus_bleu(["x y z w"], [["a b c d"]]) == 0.0


def test_cider_rewards_consensus() -> None:
    from pixlm.eval.caption_metrics import cider

    refs = [["a large red circle in the top left"], ["a small blue square at the bottom"]]
    same = cider(["a large red circle in the top left", "a small blue square at the bottom"], refs)
    swapped = cider(["a small blue square at the bottom", "a large red circle in the top left"], refs)
    assert same == pytest.approx(10.0) and swapped < 1.0
