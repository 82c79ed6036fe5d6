"""The captioner trained on an imagefolder (the emoji recipe's stage) and the bundled emoji model's captioner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file

from pixlm.cli import app
from pixlm.data.folder import ImageFolder
from pixlm.models.captioner import SPECIALS, UNK, Captioner, build_vocab, split_words
from pixlm.testing import tiny_pipeline
from pixlm.train.captioner import CaptionerTrainConfig, attach_captioner, train_captioner

# (file, colour, captions): a picture may carry several caption rows, as the emoji data does
PICTURES = [("a.png", "red", ["red ball", "red ball, toy"]), ("b.png", "blue", ["blue cup", "blue cup, drink"]),
            ("c.png", "green", ["green leaf"]), ("d.png", "yellow", ["yellow star", "yellow star, sky", "star"])]


def _write_folder(root: Path, pictures: list[tuple[str, str, list[str]]]) -> Path:
    root.mkdir(parents=True)
    with open(root / "metadata.jsonl", "w") as f:
        for k, (name, colour, captions) in enumerate(pictures):
            im = Image.new("RGB", (64, 64), "white")
            ImageDraw.Draw(im).ellipse((8 + 4 * k, 8, 48, 56), fill=colour)
            im.save(root / name)
            f.writelines(json.dumps({"file_name": name, "text": text}) + "\n" for text in captions)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("capdata")
    return {"train": _write_folder(root / "train", PICTURES),
            "test": _write_folder(root / "test", [("e.png", "red", ["red ball, round"])])}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "vq"
    tiny_pipeline().vq.save_pretrained(path)
    return path


def _cfg(folders: dict[str, Path], tokenizer: Path, out: Path, **kw) -> CaptionerTrainConfig:
    base = {"out": str(out), "tokenizer": str(tokenizer), "data": str(folders["train"]),
            "eval_data": str(folders["test"]), "steps": 6, "batch_size": 4, "dim": 32, "encoder_layers": 1,
            "decoder_layers": 1, "heads": 2, "max_length": 12, "log_every": 2, "eval_every": 4, "ckpt_every": 100,
            "warmup": 2}
    return CaptionerTrainConfig(**{**base, **kw})


def test_pictures_groups_caption_rows(folders) -> None:
    assert ImageFolder(folders["train"]).pictures() == [[0, 1], [2, 3], [4], [5, 6, 7]]


def test_folder_training_resumes_exactly(folders, tokenizer, tmp_path: Path) -> None:
    straight = train_captioner(_cfg(folders, tokenizer, tmp_path / "straight"))
    run = tmp_path / "run"
    train_captioner(_cfg(folders, tokenizer, run, stop_after=4))  # interrupted at step 4, schedule spans 6
    resumed = train_captioner(_cfg(folders, tokenizer, run, resume=True))
    a, b = Captioner.from_pretrained(straight), Captioner.from_pretrained(resumed)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-6), name  # batches are a function of (seed, step)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "stopped" not in r] == [2, 4, 6]
    last = rows[-1]
    for key in ("train_loss", "train_bleu4", "train_cider", "test_loss", "test_bleu4"):
        assert key in last and last[key] >= 0, key
    # the vocabulary is the folder's caption words; pictures are encoded once, captions kept with them
    assert a.config.vocab == build_vocab([t for _, _, caps in PICTURES for t in caps])
    assert "leaf" in a.config.vocab and "round" not in a.config.vocab  # the held-out folder adds no words
    with safe_open(str(run / "pool.safetensors"), "pt") as f:
        assert f.get_tensor("tokens").shape == (4, 64)
        assert json.loads(f.metadata()["captions"]) == [caps for _, _, caps in PICTURES]
    with pytest.raises(ValueError, match="not shapes scenes"):
        train_captioner(CaptionerTrainConfig(out=str(run), tokenizer=str(tokenizer), steps=1, dim=32, heads=2,
                                             vocab_scenes=10, eval_n=2))


def test_rare_words_map_to_unk_and_captions_are_free(folders, tokenizer, tmp_path: Path) -> None:
    path = train_captioner(_cfg(folders, tokenizer, tmp_path / "r", steps=2, vocab_min_count=2, eval_data=""))
    cap = Captioner.from_pretrained(path)
    assert cap.config.vocab == SPECIALS + (",", "ball", "blue", "cup", "red", "star", "yellow")
    assert cap.encode_text("green leaf")[1:3] == [UNK, UNK]


def test_recipe_stage_trains_and_attaches(folders, tokenizer, tmp_path: Path) -> None:
    from pixlm.train.emoji import EmojiRecipeConfig, stage_captioner

    data = tmp_path / "data"
    data.mkdir()
    for split, src in (("train", "train"), ("test_variant", "test"), ("test_emoji", "test")):
        (data / split).symlink_to(folders[src])
    cfg = EmojiRecipeConfig(work=str(tmp_path / "work"), captioner_steps=2, captioner_dim=32)
    model = stage_captioner(cfg, data, tokenizer)
    assert (model / ".complete").exists() and stage_captioner(cfg, data, tokenizer) == model  # done: skipped
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "m")
    attach_captioner(model, tmp_path / "m")
    weights = load_file(str(tmp_path / "m" / "captioner" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}


def _shipped_style_picture() -> Image.Image:
    """A Noto emoji when the font is installed (what the model was trained on), else a flat-shaded drawing."""
    from pixlm.data.emoji import NOTO_FONT, open_font, render_emoji

    if Path(NOTO_FONT).is_file():
        return render_emoji(open_font(), "\U0001F34E")  # red apple
    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).ellipse((10, 12, 54, 58), fill=(220, 30, 40))
    return im


def test_bundled_emoji_model_captions(tmp_path: Path, runner) -> None:
    from pixlm.pipelines.common import bundled_model_path
    from pixlm.pipelines.text_to_image import load_pipeline

    folder = bundled_model_path("emoji-masked") / "captioner"
    assert (folder / "model.safetensors").stat().st_size < 3_600_000  # float16
    model_bytes = sum(f.stat().st_size for f in folder.parent.rglob("*") if f.is_file())
    assert model_bytes <= 40_000_000  # the emoji model's budget (issue 23), retrieval index included
    pipe = load_pipeline("emoji")
    cap = pipe.get_captioner()  # also checks the tokenizer fingerprint against the model's vq/
    assert len(cap.config.vocab) > 1000
    png = tmp_path / "apple.png"
    _shipped_style_picture().save(png)
    result = runner.invoke(app, ["caption", str(png), "--model", "emoji"])
    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    words = split_words(text)
    assert words and all(w in cap.config.vocab[len(SPECIALS):] for w in words), text
    assert pipe.caption(Image.open(png)) == [text]


def test_cli_trains_on_a_folder(folders, tokenizer, tmp_path: Path, runner) -> None:
    result = runner.invoke(app, ["train", "captioner", "--out", str(tmp_path / "c"), "--tokenizer", str(tokenizer),
                                 "--data", str(folders["train"]), "--steps", "1", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert Captioner.from_pretrained(tmp_path / "c" / "model").config.vocab[-1] == "yellow"
