"""Retrieval-augmented drawing (pixlm.pipelines.retrieval, pixlm.train.retrieval) on a tiny random pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pixlm.checkpoint import CheckpointError
from pixlm.pipelines.retrieval import RetrievalIndex, check_retrieval_settings, named_group, strip_group
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.testing import tiny_pipeline
from pixlm.train.retrieval import attach_index, build_index

PICTURES = [  # (file, colour, caption, style)
    ("a.png", (220, 30, 30), "red apple, noto style", "noto"),
    ("b.png", (30, 200, 30), "green leaf, noto style", "noto"),
    ("c.png", (30, 30, 220), "red apple, twemoji style", "twemoji"),
    ("d.png", (240, 200, 20), "yellow star, twemoji style", "twemoji"),
]


def write_data(root: Path) -> Path:
    root.mkdir(parents=True)
    with open(root / "metadata.jsonl", "w") as f:
        for name, colour, text, style in PICTURES:
            im = Image.new("RGB", (64, 64), "white")
            im.paste(colour, (8 + len(text) % 20, 12, 40, 52))
            im.save(root / name)
            f.write(json.dumps({"file_name": name, "text": text, "style": style}) + "\n")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("retrieval")
    data = write_data(tmp / "data")
    model = tmp / "model"
    tiny_pipeline(seed=3).save_pretrained(model)
    attach_index(model, data, group_field="style", settings={"top_k": 1, "keep": 1.0})
    return model


def test_the_index_holds_every_picture_with_its_tokens_caption_and_group(model_dir: Path) -> None:
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    index = pipe.retrieval
    assert index is not None and len(index) == len(PICTURES)
    assert index.groups == [p[3] for p in PICTURES]
    assert index.captions == [p[2] for p in PICTURES]
    assert index.tokens.shape == (len(PICTURES), pipe.generator.config.num_tokens)
    # the tokens are the model's own tokenizer's reading of each picture
    first = torch.from_numpy(__import__("numpy").asarray(Image.open(model_dir.parent / "data" / "a.png"))).float()
    want = pipe.vq.encode(first.permute(2, 0, 1)[None] / 127.5 - 1).flatten()
    assert torch.equal(index.tokens[0].long(), want)
    norms = index.embeddings.float().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-2)
    assert json.loads((model_dir / "model_index.json").read_text())["defaults"]["retrieval"]["top_k"] == 1


def test_keep_all_redraws_nothing_and_the_caption_finds_its_picture(model_dir: Path) -> None:
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    for row, (_, _, text, _) in enumerate(PICTURES):
        out = pipe.generate(text, seed=0)
        assert torch.equal(out.tokens.flatten(), pipe.retrieval.tokens[row].long()), text


def test_a_named_style_selects_its_group_only() -> None:
    assert named_group("red apple, twemoji style", {"noto", "twemoji"}) == "twemoji"
    assert named_group("red apple in noto style please", {"noto", "twemoji"}) == "noto"
    assert named_group("red apple, fancy style", {"noto", "twemoji"}) is None
    assert named_group("red apple", {"noto"}) is None


def test_group_phrases_are_left_out_so_a_prompt_without_one_draws_every_group(model_dir: Path) -> None:
    assert strip_group("red apple, noto style", {"noto"}) == "red apple"
    assert strip_group("red apple, fancy style", {"noto"}) == "red apple, fancy style"
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    idx = pipe.retrieval
    assert torch.allclose(idx.embeddings[0].float(), idx.embeddings[2].float(), atol=1e-3)  # one apple, two styles
    pipe.defaults["retrieval"] = {"top_k": 4, "keep": 1.0, "temperature": 0.03}
    drawn = {int((pipe.generate("red apple", seed=s).tokens.flatten()[None] == idx.tokens.long()).all(1).nonzero())
             for s in range(12)}
    assert drawn == {0, 2}
    for s in range(4):  # naming the style picks that group's apple
        assert torch.equal(pipe.generate("red apple, twemoji style", seed=s).tokens.flatten(), idx.tokens[2].long())


def test_the_group_filter_decides_between_equal_captions(model_dir: Path) -> None:
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    idx = pipe.retrieval
    q = torch.nn.functional.normalize(torch.randn(idx.embeddings.shape[1]), dim=0)
    _, rows = idx.nearest(q, 4, group="twemoji")
    assert sorted(rows.tolist()) == [2, 3]
    _, rows = idx.nearest(q, 4, group=None)
    assert sorted(rows.tolist()) == [0, 1, 2, 3]


def test_seed_s_plus_i_holds_with_retrieval_and_redrawing(model_dir: Path) -> None:
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    pipe.defaults["retrieval"] = {"top_k": 4, "keep": 0.5, "temperature": 1.0}
    many = pipe.generate("red apple", num_images_per_prompt=3, seed=11)
    for i in range(3):
        one = pipe.generate("red apple", seed=11 + i)
        assert torch.equal(many.tokens[i], one.tokens[0])
    # half of each picture is a retrieved picture's tokens, frozen
    kept = [(many.tokens[i].flatten()[None] == pipe.retrieval.tokens.long()).float().mean(1).max() for i in range(3)]
    assert all(k >= 0.5 for k in kept)


def test_retrieve_false_draws_from_the_prompt_alone(model_dir: Path) -> None:
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    plain = TextToImagePipeline.from_pretrained(model_dir)
    plain.attach_retrieval(None)
    a = pipe.generate("green leaf, noto style", seed=4, retrieve=False)
    b = plain.generate("green leaf, noto style", seed=4)
    assert torch.equal(a.tokens, b.tokens)
    with pytest.raises(ValueError, match="retrieve=True but this model has no retrieval"):
        plain.generate("x", retrieve=True)
    with pytest.raises(ValueError, match="retrieve='yes'"):
        pipe.generate("x", retrieve="yes")  # type: ignore[arg-type]


def test_bad_settings_and_mismatched_indexes_are_clear_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="top_k=0"):
        check_retrieval_settings({"top_k": 0})
    with pytest.raises(ValueError, match="keep=1.5"):
        check_retrieval_settings({"keep": 1.5})
    with pytest.raises(ValueError, match=r"unknown retrieval settings \['topk'\]"):
        check_retrieval_settings({"topk": 3})
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    idx = pipe.retrieval
    short = RetrievalIndex(idx.tokens[:, :4], idx.embeddings, idx.captions, idx.groups)
    with pytest.raises(CheckpointError, match="holds 4 tokens per picture"):
        pipe.attach_retrieval(short)
    other = RetrievalIndex(idx.tokens, idx.embeddings, idx.captions, idx.groups, text_encoder_id="minilm")
    with pytest.raises(CheckpointError, match="embedded by text encoder 'minilm'"):
        pipe.attach_retrieval(other)
    with pytest.raises(ValueError, match="no 'colour' field"):
        build_index(pipe, model_dir.parent / "data", group_field="colour", progress=False)


def test_the_index_round_trips_through_save_pretrained(model_dir: Path, tmp_path: Path) -> None:
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    pipe.save_pretrained(tmp_path / "copy")
    again = TextToImagePipeline.from_pretrained(tmp_path / "copy")
    assert torch.equal(again.retrieval.tokens, pipe.retrieval.tokens)
    assert torch.equal(again.retrieval.embeddings, pipe.retrieval.embeddings)
    assert again.retrieval.groups == pipe.retrieval.groups
    assert torch.equal(again.generate("yellow star", seed=2).tokens, pipe.generate("yellow star", seed=2).tokens)


def test_word_overlap_breaks_near_ties_of_meaning(model_dir: Path) -> None:
    idx = TextToImagePipeline.from_pretrained(model_dir).retrieval
    q = torch.nn.functional.normalize(torch.randn(idx.embeddings.shape[1]), dim=0)
    dense, _ = idx.nearest(q, 4)
    for row, (_, _, text, group) in enumerate(PICTURES):  # a heavy word weight finds the exact label
        _, rows = idx.nearest(q, 1, group, strip_group(text, {"noto", "twemoji"}), lexical=10.0)
        assert int(rows[0]) == row
    scores, _ = idx.nearest(q, 4, None, "no words in common", lexical=0.3)
    assert torch.allclose(scores, dense)  # no overlap: the cosine alone
    with pytest.raises(ValueError, match="lexical=-1"):
        check_retrieval_settings({"lexical": -1})


def test_a_model_with_an_attribution_says_the_pictures_ship(model_dir: Path, tmp_path: Path) -> None:
    from pixlm.train.retrieval import RETRIEVAL_NOTICE

    model = tmp_path / "m"
    tiny_pipeline(seed=3).save_pretrained(model)
    (model / "ATTRIBUTION.md").write_text("# Attribution\n\nPictures: test art.\n")
    for _ in range(2):  # rebuilding keeps one notice
        attach_index(model, model_dir.parent / "data", group_field="style")
    text = (model / "ATTRIBUTION.md").read_text()
    assert text.startswith("# Attribution") and text.count(RETRIEVAL_NOTICE) == 1
