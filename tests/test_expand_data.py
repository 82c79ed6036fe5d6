"""Prompt-expander data and model: loose/canonical pairs, the tiny LM, its decoding, checkpoint and training loop."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from pixlm.data.loose import (Group, Part, canonical, expansion_correct, intended_specs, loose_prompt_set,
                              spec_implies, training_pair, vocabulary_words)
from pixlm.data.specs import parse_prompt
from pixlm.models.expander_lm import (ExpanderConfig, ExpanderLM, build_vocab, caption_loss, join_words,
                                      split_words)


def tiny_lm(seed: int = 0) -> ExpanderLM:
    torch.manual_seed(seed)
    return ExpanderLM(ExpanderConfig(vocab=build_vocab(vocabulary_words()), dim=32, layers=1, heads=2))


def test_pairs_are_varied_and_targets_canonical() -> None:
    rng = random.Random(0)
    pairs = [training_pair(rng) for _ in range(600)]
    loose_texts = [a for a, _ in pairs]
    assert len(set(loose_texts)) > 550  # hardly any repeats
    assert sum(a != b for a, b in pairs) > 450  # most are not already canonical
    joined = " ".join(loose_texts).lower()
    for informal in ("ball", "box", "rhombus", "big", "tiny", "upper left", "middle", " 2 ", "crimson", "a few"):
        assert informal in f" {joined} ", informal
    canonical_words = {"a", "an", "two", "three", "four", "small", "large", "in", "the", "at", "on", "of", "to",
                       "top", "bottom", "left", "right", "center", "above", "below", "and", ",",
                       "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink",
                       "circle", "square", "triangle", "diamond", "circles", "squares", "triangles", "diamonds"}
    for _, target in pairs:
        parse_prompt(target)  # raises outside the grammar
        assert set(split_words(target)) <= canonical_words, target


def test_benchmark_set_is_deterministic_held_out_and_self_consistent() -> None:
    a, b = loose_prompt_set(n=120), loose_prompt_set(n=120)
    assert a == b and len({r["prompt"] for r in a}) == 120
    assert {r["category"] for r in a} >= {"vague", "relation", "position", "counting"}
    assert all(expansion_correct(r["canonical"], r["specs"]) for r in a)  # the reference answer is right
    assert loose_prompt_set(seed=1, n=20) != a[:20]


def test_vague_intent_allows_several_readings() -> None:
    g = Group("square", count=3, color="blue", vague_shape=True, counts=(2, 3))
    intent = (Part(g),)
    assert canonical(intent) == "three blue squares"
    specs = intended_specs(intent)
    assert [len(s["objects"]) for s in specs] == [2, 3]
    assert all(o == {"color": "blue"} for s in specs for o in s["objects"])
    assert expansion_correct("two blue circles", specs) and expansion_correct("three blue triangles", specs)
    assert not expansion_correct("four blue circles", specs) and not expansion_correct("two red circles", specs)
    assert not expansion_correct("not a caption at all", specs)


def test_spec_implies_accepts_inverse_relations_and_extra_detail() -> None:
    want = intended_specs((Part(Group("circle", color="red"), "above", Group("square", color="blue")),))[0]
    assert spec_implies(parse_prompt("a blue square below a red circle"), want)
    assert spec_implies(parse_prompt("a large red circle above a blue square"), want)
    assert spec_implies(parse_prompt("a red circle at the top and a blue square at the bottom"), want)
    assert not spec_implies(parse_prompt("a red circle below a blue square"), want)
    assert not spec_implies(parse_prompt("a red circle and a blue square"), want)
    with pytest.raises(ValueError, match="count=5"):
        Group("circle", count=5)


def test_words_round_trip() -> None:
    assert split_words("Top-left: 2 RED balls!") == ["top", "-", "left", ":", "2", "red", "balls", "!"]
    text = "a red circle in the top left, two squares and a diamond"
    assert join_words(split_words(text)) == text


def test_batch_masks_the_prompt_and_padding() -> None:
    m = tiny_lm()
    x, y = m.batch([("red ball", "a red circle"), ("a few blue things up left", "three blue squares")])
    assert x.shape == y.shape
    n_target = [len(split_words("a red circle")) + 1, len(split_words("three blue squares")) + 1]  # + <eos>
    assert ((y != -100).sum(1)).tolist() == n_target
    assert m.decode(y[0][y[0] != -100].tolist()) == "a red circle"
    assert m.encode("zzqx red") == [m.unk_id, m.index["red"]]


def test_kv_cache_decoding_matches_full_reforward() -> None:
    m = tiny_lm(1).eval()
    prompts = [m.encode(t) + [m.sep_id] for t in ("red ball up left", "a few blue things", "2 boxes", "dot")]
    assert m.generate_ids(prompts, 12) == m.generate_ids(prompts, 12, use_cache=False)
    with pytest.raises(ValueError, match="words"):
        m.rewrite(["red " * 200])


def test_tiny_lm_learns_and_round_trips(tmp_path) -> None:
    m = tiny_lm(2)
    pairs = [("red ball up left", "a red circle in the top left"), ("a few blue things", "three blue squares")]
    x, y = m.batch(pairs)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    first = m.loss(x, y).item()
    for _ in range(80):
        loss = m.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10
    assert m.eval().rewrite([a for a, _ in pairs]) == [b for _, b in pairs]
    m.save_pretrained(tmp_path / "exp")
    cfg = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert cfg["kind"] == "expander_lm" and cfg["vocab"][:4] == ["<pad>", "<unk>", "<sep>", "<eos>"]
    back = ExpanderLM.from_pretrained(tmp_path / "exp")
    assert back.config == m.config
    assert torch.allclose(back(x), m(x))
    assert back.rewrite([a for a, _ in pairs]) == [b for _, b in pairs]


def test_training_script_runs_and_resumes(tmp_path) -> None:
    from pixlm.train.expander import ExpanderTrainConfig, train_expander

    cfg = ExpanderTrainConfig(out=str(tmp_path / "run"), steps=4, batch_size=4, dim=16, layers=1, heads=2,
                              log_every=2, eval_every=2, eval_n=3, ckpt_every=2)
    path = train_expander(cfg)
    assert (path / "model.safetensors").is_file() and (path / ".complete").is_file()
    cfg.steps, cfg.resume = 6, True
    train_expander(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and all("dev_spec_acc" in r for r in rows)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if re.match(r"step-\d+$", p.name)) \
        == ["step-0000002", "step-0000004", "step-0000006"]
    assert ExpanderLM.from_pretrained(path).config.dim == 16


def test_packed_batch_gives_the_same_loss() -> None:
    m = tiny_lm(3)
    rng = random.Random(1)
    pairs = [training_pair(rng) for _ in range(12)]
    x, y = m.batch(pairs)
    packed = m.packed_batch(pairs)
    assert packed["idx"].shape[0] < len(pairs) and packed["idx"].shape[1] == m.config.max_len
    assert (packed["targets"] != -100).sum() == (y != -100).sum()
    packed_loss = caption_loss(m(packed["idx"], packed["positions"], packed["segments"]), packed["targets"])
    assert torch.allclose(packed_loss, m.loss(x, y), atol=1e-5)
