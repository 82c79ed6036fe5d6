"""The emoji dataset builder, its splits, the contrastive scorer and bundled-model names.

The Noto path needs Debian's fonts-noto-color-emoji (CI installs it; tests that render skip without it, like the
web UI test without chromium); tests of the npm annotations skip when `npm install openmoji emoji-datasource-google`
has not been run (set PIXLM_NODE_MODULES to its node_modules).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from pixlm.cli import app
from pixlm.data.emoji import (NOTO_FONT, NOTO_INSTALL, SPLITS, Emoji, EmojiDataConfig, EmojiSourceError, assign_splits,
                              build_emoji_dataset, emoji_catalog, npm_sources, render_emoji, open_font)
from pixlm.data.folder import ImageFolder

NODE_MODULES = os.environ.get("PIXLM_NODE_MODULES", "node_modules")
needs_font = pytest.mark.skipif(not Path(NOTO_FONT).is_file(), reason=f"{NOTO_FONT} is missing ({NOTO_INSTALL})")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def emoji_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(NOTO_FONT).is_file():
        pytest.skip(f"{NOTO_FONT} is missing ({NOTO_INSTALL})")
    out = tmp_path_factory.mktemp("emoji") / "d"
    build_emoji_dataset(EmojiDataConfig(out=str(out), max_bases=60, test_emoji_fraction=0.2,
                                        test_variant_fraction=0.9))
    return out


def test_dataset_layout_and_captions(emoji_data: Path) -> None:
    for name in ("splits.json", "catalog.jsonl", "ATTRIBUTION.md", "LICENSE-noto-color-emoji.txt"):
        assert (emoji_data / name).is_file(), name
    assert "Apache" in (emoji_data / "LICENSE-noto-color-emoji.txt").read_text()
    for split in SPLITS:
        ds = ImageFolder(emoji_data / split)  # validates every row and file
        assert len(ds) > 0, split
        assert all(r.text.strip() for r in ds.rows)
        item = ds[0]
        assert item["image"].shape == (3, 64, 64)
        assert float(item["image"].min()) < 0.5  # a drawing, not a blank white square
        rows = [json.loads(line) for line in (emoji_data / split / "metadata.jsonl").read_text().splitlines()]
        per_file: dict[str, int] = {}
        for r in rows:
            per_file[r["file_name"]] = per_file.get(r["file_name"], 0) + 1
        assert max(per_file.values()) >= 2  # several captions per picture: name, name + category, ...


def test_splits_are_disjoint_and_hold_out_what_they_claim(emoji_data: Path) -> None:
    splits = json.loads((emoji_data / "splits.json").read_text())
    sets = {s: set(splits[s]) for s in SPLITS}
    assert all(sets[s] for s in SPLITS), splits["counts"]
    assert not sets["train"] & sets["test_emoji"] and not sets["train"] & sets["test_variant"]
    assert not sets["test_emoji"] & sets["test_variant"]
    catalog = [json.loads(line) for line in (emoji_data / "catalog.jsonl").read_text().splitlines()]
    assert {c["hexcode"] for c in catalog} == set().union(*sets.values())
    bases = {s: {c["base"] for c in catalog if c["split"] == s} for s in SPLITS}
    assert not bases["test_emoji"] & bases["train"]  # held-out emoji: no form of them is trained on
    assert bases["test_variant"] <= bases["train"]  # held-out variants: their base is trained on
    assert all(c["variant"] for c in catalog if c["split"] == "test_variant")
    files = {s: {p.name for p in (emoji_data / s).glob("*.png")} for s in SPLITS}
    assert files["test_emoji"] == {h.lower() + ".png" for h in sets["test_emoji"]}


def test_build_is_deterministic(tmp_path: Path, emoji_data: Path) -> None:
    again = tmp_path / "again"
    build_emoji_dataset(EmojiDataConfig(out=str(again), max_bases=60, test_emoji_fraction=0.2,
                                        test_variant_fraction=0.9))
    assert _digest(again) == _digest(emoji_data)


def test_split_assignment_is_order_free_and_checked() -> None:
    cat = [Emoji(chr(0x1F600 + i), f"face {i}", base=f"{0x1F600 + i:X}") for i in range(200)]
    a = assign_splits(cat, seed=3, test_emoji_fraction=0.3)
    assert a == assign_splits(cat[::-1], seed=3, test_emoji_fraction=0.3)
    assert 20 < sum(v == "test_emoji" for v in a.values()) < 100
    assert a != assign_splits(cat, seed=4, test_emoji_fraction=0.3)
    with pytest.raises(ValueError, match="test_emoji_fraction=1.5"):
        assign_splits(cat, test_emoji_fraction=1.5)


def test_captions_of_an_emoji() -> None:
    e = Emoji("\U0001F34E", "red apple", ("fruit", "red", "apple", "food"), "food & drink", "food fruit",
              base="1F34E")
    assert e.captions() == ["red apple", "red apple, fruit, food", "red apple, food and drink emoji",
                            "red apple, food fruit"]
    tone = Emoji("\U0001F44D\U0001F3FD", "thumbs up", base="1F44D", variant="medium skin tone")
    assert tone.captions() == ["thumbs up, medium skin tone"] and tone.hexcode == "1F44D-1F3FD"


@needs_font
def test_font_renders_sequences_as_one_picture() -> None:
    font = open_font()
    cat = render_emoji(font, "\U0001F431")
    assert cat.size == (64, 64) and cat.mode == "RGB"
    assert cat.getpixel((0, 0)) == (255, 255, 255)
    # a skin-tone sequence is one glyph: its picture differs from the base's
    assert render_emoji(font, "\U0001F44D\U0001F3FF").tobytes() != render_emoji(font, "\U0001F44D").tobytes()


@needs_font  # the npm check below runs after the font is found
def test_missing_sources_say_how_to_install(tmp_path: Path, runner) -> None:
    with pytest.raises(EmojiSourceError, match="apt-get install -y fonts-noto-color-emoji"):
        emoji_catalog(font_path=tmp_path / "none.ttf")
    with pytest.raises(EmojiSourceError, match="npm install openmoji"):
        emoji_catalog(node_modules=tmp_path, sources=("noto", "openmoji"))
    with pytest.raises(ValueError, match="'noto' .* is required"):
        emoji_catalog(sources=("openmoji",))
    assert npm_sources(tmp_path) == ()
    result = runner.invoke(app, ["data", "emoji", "--out", str(tmp_path / "o"), "--font", str(tmp_path / "x.ttf")])
    assert result.exit_code == 1 and NOTO_INSTALL in result.output


@needs_font
def test_cli_builds_a_small_set(tmp_path: Path, runner) -> None:
    out = tmp_path / "emoji"
    result = runner.invoke(app, ["data", "emoji", "--out", str(out), "--max-bases", "12", "--sources", "noto"])
    assert result.exit_code == 0, result.output
    assert "sources noto" in result.output
    check = runner.invoke(app, ["data", "check", str(out / "train")])
    assert check.exit_code == 0, check.output
    again = runner.invoke(app, ["data", "emoji", "--out", str(out), "--max-bases", "12", "--sources", "noto"])
    assert again.exit_code == 1 and "--overwrite" in again.output


@pytest.mark.skipif(len(npm_sources(NODE_MODULES)) < 2, reason="npm openmoji / emoji-datasource-google not installed "
                    "(set PIXLM_NODE_MODULES)")
def test_npm_annotations_add_names_tags_and_sequences() -> None:
    catalog = emoji_catalog(node_modules=NODE_MODULES, sources=("noto", "openmoji", "emoji-datasource"))
    by_hex = {e.hexcode: e for e in catalog}
    beach = by_hex["1F3D6-FE0F"]
    assert beach.name == "beach with umbrella" and "umbrella" in beach.keywords
    assert beach.category == "travel & places"
    assert any("\u200d" in e.seq for e in catalog)  # ZWJ sequences (professions, families) come from npm data
    assert any(e.category == "flags" for e in catalog)


def test_scorer_retrieval_and_save(tmp_path: Path, emoji_data: Path) -> None:
    from pixlm.eval.clip_score import (ContrastiveScorer, ScorerTrainConfig, clip_score, retrieval,
                                       train_scorer)

    eye = torch.eye(4)
    assert retrieval(eye, eye)["top1"] == 1.0
    assert retrieval(eye, eye[[1, 0, 2, 3]])["top1"] == 0.5
    assert clip_score(eye, eye) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one text per image"):
        retrieval(eye, eye[:3])
    path = train_scorer(ScorerTrainConfig(data=str(emoji_data / "train"), out=str(tmp_path / "clip"), steps=3,
                                          batch_size=8, text_encoder="tiny"))
    log = [json.loads(line) for line in (tmp_path / "clip" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and log[-1]["loss"] > 0
    model = ContrastiveScorer.from_pretrained(path)
    x = torch.zeros(2, 3, 64, 64)
    assert model.features(x).shape == (2, model.config.channels[-1])
    assert torch.allclose(model.embed_images(x).norm(dim=-1), torch.ones(2))


def test_bundled_names_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixlm.pipelines.text_to_image as pp

    seen = []
    monkeypatch.setattr(pp.TextToImagePipeline, "from_pretrained", classmethod(lambda cls, p, device="cpu": seen.append(p)))
    pp.load_pipeline("shapes")
    assert seen[-1] == pp.bundled_model_path("shapes-masked")
    if (Path(pp.__file__).parents[1] / "assets" / "emoji-masked" / "model_index.json").is_file():
        pp.load_pipeline("emoji")
        assert seen[-1].name == "emoji-masked"
    else:
        with pytest.raises(pp.CheckpointError, match="python -m pixlm.train.emoji"):
            pp.load_pipeline("emoji")
    pp.load_pipeline("some/folder")
    assert seen[-1] == "some/folder"


def test_generate_with_the_bundled_emoji_model(tmp_path: Path, runner) -> None:
    from PIL import Image

    result = runner.invoke(app, ["generate", "a beach with palm trees", "--model", "emoji", "--steps", "2",
                                 "--seed", "0", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    pngs = sorted(tmp_path.glob("*.png"))  # the output also carries model-loading progress bars
    assert len(pngs) == 1 and pngs[0].name in result.output
    png = pngs[0]
    with Image.open(png) as im:
        assert im.size == (64, 64)
        assert len(set(im.convert("RGB").getdata())) > 8  # a picture, not a flat colour
