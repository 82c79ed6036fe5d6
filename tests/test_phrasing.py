"""Training phrasings (pixlm.data.phrasing): scenes satisfy their prompts' intents, the wording covers the free
forms of issue 22, colour words agree with the other word lists, and a fine-tune starts from a trained generator."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from pixlm.data import loose, phrasing
from pixlm.data.loose import Group, Part, intended_specs
from pixlm.data.shapes import COLORS, satisfies
from pixlm.eval.paraphrase import FREE_COLORS, make_paraphrase_set


@pytest.mark.parametrize("category", sorted(phrasing.CATEGORY_WEIGHTS))
def test_scenes_satisfy_the_intent_of_every_category(category: str) -> None:
    rng = random.Random(category)
    for _ in range(150):
        intent = phrasing.weak_intent(rng, category)
        scene = phrasing.scene_for(intent, rng)
        objects = [o.to_dict() for o in scene.objects]
        assert any(satisfies(objects, s) for s in intended_specs(intent)), (intent, objects)
    with pytest.raises(ValueError, match="category='nope'"):
        phrasing.weak_intent(rng, "nope")


def test_unnamed_attributes_vary_and_impossible_intents_are_refused() -> None:
    rng = random.Random(0)
    intent = (Part(Group("circle", count=3)),)  # "three circles": colours and sizes are free
    colors = {o.color for _ in range(30) for o in phrasing.scene_for(intent, rng).objects}
    assert len(colors) >= 5
    stacked = (Part(Group("circle", 4), "above", Group("square", 3)), Part(Group("diamond", cell=(2, 0))))
    with pytest.raises(ValueError, match="no placement"):  # 4 over 3 needs the whole bottom row: (2, 0) is taken
        phrasing.scene_for(stacked, rng, tries=200)


def test_training_pairs_are_balanced_varied_and_cover_the_free_forms() -> None:
    rng = random.Random(1)
    pairs = [phrasing.training_pair(rng) for _ in range(1500)]
    prompts = [p for _, p in pairs]
    assert len(set(prompts)) > 1200
    text = " " + " ".join(prompts).lower() + " "
    for form in ("crimson", "azure", "teal", "amber", "navy", "lime", "magenta", " disc", "lozenge", "wedge",
                 " tile", "pyramid", "kite", " gem", "near the ", " edge", "corner", "centre",
                 "coloured", "draw me", "please make", "i want", " 2 ", "a pair of", " three ", "huge", "tiny",
                 " thing", "above", "below"):
        assert form in text, form
    sizes = Counter(len(scene.objects) for scene, _ in pairs)
    assert sizes[2] > 300 and sizes[3] + sizes[4] > 400  # pairs, triples and groups dominate single objects


def test_colour_words_agree_across_word_lists() -> None:
    """Every colour word names one palette colour, the same in training, the expander's data and the eval set."""
    owner: dict[str, str] = {}
    for table in (phrasing.COLOR_WORDS, loose.COLOR_WORDS, FREE_COLORS):
        assert set(table) == set(COLORS)
        for color, words in table.items():
            for w in words:
                assert owner.setdefault(w, color) == color, (w, owner[w], color)
    for w in ("crimson", "scarlet", "azure", "navy", "teal", "turquoise", "violet", "lilac", "gold", "amber",
              "tangerine", "rose", "magenta", "lime", "emerald"):  # the list: all taught in training
        assert w in owner and w in phrasing.COLOR_WORDS[owner[w]], w


def test_roughen_spells_british_without_mangling_longer_words() -> None:
    rng = random.Random(0)
    out = phrasing.roughen("a circle colored red centered in the center", rng, typo=0, british=1, punct=0, case=0)
    assert out == "a circle coloured red centred in the centre"


def test_training_wording_is_not_the_evaluation_set() -> None:
    rng = random.Random(2)
    train = {phrasing.training_pair(rng)[1].lower() for _ in range(3000)}
    evaluated = [r["prompt"].lower() for r in make_paraphrase_set()]
    assert sum(p in train for p in evaluated) <= len(evaluated) // 20


def test_start_from_makes_step_zero_that_resume_continues(tmp_path: Path) -> None:
    from pixlm.models.masked import MaskedConfig, MaskedTransformer
    from pixlm.train.bundle import start_from
    from pixlm.train.common import resume_from_latest
    from pixlm.train.pool import param_groups

    torch.manual_seed(0)
    cfg = MaskedConfig(vocab_size=16, grid=2, dim=16, layers=1, heads=2, text_dim=8)
    trained = MaskedTransformer(cfg)
    assert start_from(tmp_path, trained, 0.05)
    assert not start_from(tmp_path, MaskedTransformer(cfg), 0.05)  # a run with a checkpoint is left alone
    ema, raw = MaskedTransformer(cfg), MaskedTransformer(cfg)
    opt = torch.optim.AdamW(param_groups(raw, 0.05), lr=1e-3)
    state = resume_from_latest(tmp_path, {"model": ema, "raw": raw}, opt)
    assert state["step"] == 0
    for m in (ema, raw):
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), trained.state_dict().values()))


def test_exported_weights_restart_a_run_at_their_step(tmp_path: Path) -> None:
    from pixlm.models.masked import MaskedConfig, MaskedTransformer
    from pixlm.train.bundle import export_weights, start_from
    from pixlm.train.common import resume_from_latest

    cfg = MaskedConfig(vocab_size=16, grid=2, dim=16, layers=1, heads=2, text_dim=8)
    torch.manual_seed(1)
    ema, raw = MaskedTransformer(cfg), MaskedTransformer(cfg)
    start_from(tmp_path / "a", ema, 0.05, step=7, raw=raw)
    out = export_weights(tmp_path / "a", tmp_path / "w")
    assert sorted(p.name for p in out.iterdir()) == ["model", "raw", "state.json"]
    start_from(tmp_path / "b", MaskedTransformer.from_pretrained(out / "model"), 0.05, step=7,
               raw=MaskedTransformer.from_pretrained(out / "raw"))
    got_ema, got_raw = MaskedTransformer(cfg), MaskedTransformer(cfg)
    assert resume_from_latest(tmp_path / "b", {"model": got_ema, "raw": got_raw}, None)["step"] == 7
    for want, got in ((ema, got_ema), (raw, got_raw)):
        assert all(torch.equal(a, b) for a, b in zip(want.state_dict().values(), got.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        export_weights(tmp_path / "empty", tmp_path / "w2")


def test_phrase_pool_is_cached_and_appended(tmp_path: Path) -> None:
    from pixlm.models.vq import VQConfig, VQModel
    from pixlm.train.generator import GeneratorTrainConfig, build_pool, text_encoder_from_spec

    torch.manual_seed(0)
    vq, text = VQModel(VQConfig(channels=(8, 8, 16, 16), levels=(4, 4, 4))).eval(), text_encoder_from_spec("tiny")
    cfg = GeneratorTrainConfig(out=str(tmp_path), text_encoder="tiny", pool=6, phrase_pool=5)
    pool = build_pool(cfg, vq, text, tmp_path)
    assert pool["tokens"].shape[0] == 11 and len(pool["offsets"]) == 12
    assert int(pool["offsets"][-1]) == pool["text"].shape[0]
    prompts = (tmp_path / "pool_phrases-5.txt").read_text().splitlines()
    rng = random.Random(cfg.seed + 780)  # phrase_pairs' stream: the cached prompts are phrasing.training_pair's
    assert prompts == [phrasing.training_pair(rng)[1] for _ in range(5)]
    again = build_pool(cfg, vq, text, tmp_path)  # from the caches
    assert all(torch.equal(pool[k], again[k]) for k in pool)
    with pytest.raises(ValueError, match="need the built-in shapes pool"):
        build_pool(GeneratorTrainConfig(data="somewhere", phrase_pool=5), vq, text, tmp_path)
