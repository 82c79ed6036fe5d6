"""The emoji dataset builder (four styles from npm's Iconify emoji sets), its splits, the contrastive scorer and
bundled-model names.

The builder tests run on tiny Iconify sets written here (a few coloured shapes per style, the real packages'
file layout), so they need no npm install. Tests of the real packages skip unless PIXLM_NODE_MODULES names the
node_modules of `npm install --prefix DIR @iconify-json/noto @iconify-json/twemoji @iconify-json/openmoji
@iconify-json/fluent-emoji-flat openmoji emoji-datasource-google`; the Noto font test skips without Debian's
fonts-noto-color-emoji.
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
                              build_emoji_dataset, emoji_catalog, npm_sources, open_font, render_emoji)
from pixlm.data.emoji_styles import STYLES, IconSet, render_svg
from pixlm.data.folder import ImageFolder

NODE_MODULES = os.environ.get("PIXLM_NODE_MODULES", "node_modules")
needs_font = pytest.mark.skipif(not Path(NOTO_FONT).is_file(), reason=f"{NOTO_FONT} is missing ({NOTO_INSTALL})")
needs_npm = pytest.mark.skipif(not all((Path(NODE_MODULES) / s.package / "icons.json").is_file()
                                       for s in STYLES.values()) or len(npm_sources(NODE_MODULES)) < 2,
                               reason="the npm emoji packages are not installed (set PIXLM_NODE_MODULES)")
# Tiny stand-ins of the emoji sets: (hexcode, icon name, colour). 1F44D takes skin tones; 2764 is not in fluent.
BASES = [("1f600", "grinning-face", "#fc0"), ("1f431", "cat-face", "#f90"), ("1f34e", "red-apple", "#e22"),
         ("1f680", "rocket", "#88f"), ("1f3e0", "house", "#a52"), ("1f355", "pizza", "#fb4"),
         ("2764", "red-heart", "#d00"), ("1f332", "evergreen-tree", "#2a2"), ("1f30a", "water-wave", "#29f"),
         ("1f44d", "thumbs-up", "#fc6"), ("1f44b", "waving-hand", "#fc6"), ("1f34c", "banana", "#ff3")]
TONES = [("1f3fb", "light-skin-tone", "#fde"), ("1f3ff", "dark-skin-tone", "#632")]


def write_icon_set(node_modules: Path, style: str, size: int = 36) -> None:
    """An Iconify JSON package for ``style``: each icon a shape whose place and size differ per style."""
    root = node_modules / STYLES[style].package
    root.mkdir(parents=True)
    k = list(STYLES).index(style)
    icons, chars, aliases = {}, {}, {}
    entries = [(h, n, c) for h, n, c in BASES if not (style == "fluent" and h == "2764")]
    entries += [(f"{h}-{t}", f"{n}-{tn}", tc) for h, n, _ in BASES[-3:-1] for t, tn, tc in TONES]
    for i, (hexes, name, colour) in enumerate(entries):
        r = 6 + (i + k) % 8
        shape = (f'<circle cx="18" cy="18" r="{r}" fill="{colour}"/>' if k % 2 else
                 f'<rect x="{18 - r}" y="{18 - r}" width="{2 * r}" height="{r}" fill="{colour}"/>')
        icons[name] = {"body": shape + f'<path d="M{4 + i} 30h{10 + k}v3h-{10 + k}z" fill="#123"/>'}
        chars[hexes] = name
    aliases["waving-hand-mirrored"] = {"parent": "waving-hand", "hFlip": True}
    chars["1f44b-200d-27a1"] = "waving-hand-mirrored"  # an alias: the parent drawn mirrored
    (root / "icons.json").write_text(json.dumps({"prefix": style, "icons": icons, "aliases": aliases,
                                                 "width": size, "height": size}))
    (root / "chars.json").write_text(json.dumps(chars))
    (root / "metadata.json").write_text(json.dumps({"categories": {"Smileys & Emotion": [n for _, n, _ in entries]}}))
    (root / "package.json").write_text(json.dumps({"name": STYLES[style].package, "version": "1.0.0",
                                                   "license": STYLES[style].spdx}))


@pytest.fixture(scope="session")
def fake_npm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node_modules = tmp_path_factory.mktemp("npm") / "node_modules"
    for style in STYLES:
        write_icon_set(node_modules, style)
    om = node_modules / "openmoji" / "data"
    om.mkdir(parents=True)
    (om / "openmoji.json").write_text(json.dumps([
        {"emoji": "\U0001F34E", "annotation": "red apple", "tags": "fruit, red", "openmoji_tags": "",
         "group": "food-drink", "subgroups": "food-fruit", "skintone": ""}]))
    (node_modules / "openmoji" / "LICENSE.txt").write_text("Attribution-ShareAlike 4.0 International\n")
    return node_modules


def _config(node_modules: Path, out: Path, **kw) -> EmojiDataConfig:
    return EmojiDataConfig(out=str(out), node_modules=str(node_modules), name_sources=("openmoji",),
                           test_emoji_fraction=0.25, test_variant_fraction=0.9, **kw)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def emoji_data(tmp_path_factory: pytest.TempPathFactory, fake_npm: Path) -> Path:
    out = tmp_path_factory.mktemp("emoji") / "d"
    build_emoji_dataset(_config(fake_npm, out, seed=1))
    return out


def test_dataset_layout_and_captions(emoji_data: Path) -> None:
    for name in ("splits.json", "catalog.jsonl", "ATTRIBUTION.md", "LICENSE-openmoji-data.txt",
                 *(f"LICENSE-{s}.txt" for s in STYLES)):
        assert (emoji_data / name).is_file(), name
    assert "Apache License" in (emoji_data / "LICENSE-noto.txt").read_text()
    assert "Attribution 4.0 International" in (emoji_data / "LICENSE-twemoji.txt").read_text()
    assert "Attribution-ShareAlike 4.0" in (emoji_data / "LICENSE-openmoji.txt").read_text()
    assert "Microsoft Corporation" in (emoji_data / "LICENSE-fluent.txt").read_text()
    attribution = (emoji_data / "ATTRIBUTION.md").read_text()
    assert all(s.package in attribution for s in STYLES.values())
    summary = json.loads((emoji_data / "splits.json").read_text())
    assert summary["packages"] == {s.package: "1.0.0" for s in STYLES.values()}
    rows = [json.loads(line) for split in SPLITS
            for line in (emoji_data / split / "metadata.jsonl").read_text().splitlines()]
    for split in SPLITS:
        ds = ImageFolder(emoji_data / split)  # validates every row and file
        assert len(ds) > 0, split
        item = ds[0]
        assert item["image"].shape == (3, 64, 64) and float(item["image"].min()) < 0.5  # a drawing, not blank
    apple = {r["text"] for r in rows if r["hexcode"] == "1F34E"}
    styles = {r["style"] for r in rows if r["hexcode"] == "1F34E"}
    assert styles == set(STYLES)
    assert {"red apple", "red apple, twemoji style", "red apple, fruit, twemoji style",
            "red apple, food and drink emoji"} <= apple  # names, keywords from openmoji data, style words
    assert "cat face, fluent style" in {r["text"] for r in rows}  # names without name data: the icon names
    heart = [r for r in rows if r["hexcode"] == "2764"]
    assert heart and "fluent" not in {r["style"] for r in heart}  # a style that does not draw it has no picture
    tones = {r["text"] for r in rows if r["hexcode"] == "1F44D-1F3FF"}
    assert "thumbs up, dark skin tone, noto style" in tones or not tones  # (held out if its base is)


def test_splits_hold_out_across_styles(emoji_data: Path) -> None:
    splits = json.loads((emoji_data / "splits.json").read_text())
    sets = {s: set(splits[s]) for s in SPLITS}
    assert all(sets[s] for s in SPLITS), splits["counts"]
    assert not sets["train"] & sets["test_emoji"] and not sets["train"] & sets["test_variant"]
    assert not sets["test_emoji"] & sets["test_variant"]
    catalog = [json.loads(line) for line in (emoji_data / "catalog.jsonl").read_text().splitlines()]
    assert {c["hexcode"] for c in catalog} == set().union(*sets.values())
    bases = {s: {c["base"] for c in catalog if c["split"] == s} for s in SPLITS}
    assert not bases["test_emoji"] & bases["train"]  # held-out emoji: no form of them is trained on, in any style
    assert bases["test_variant"] <= bases["train"]  # held-out variants: their base is trained on
    assert all(c["variant"] for c in catalog if c["split"] == "test_variant")
    for split in SPLITS:  # every style's picture of an emoji sits in the emoji's split
        files = {p.relative_to(emoji_data / split).as_posix() for p in (emoji_data / split).rglob("*.png")}
        want = {f"{style}/{c['hexcode'].lower()}.png" for c in catalog if c["split"] == split for style in c["styles"]}
        assert files == want
    assert sum(splits["pictures"]["train"].values()) == sum(len(c["styles"]) for c in catalog if c["split"] == "train")


def test_build_is_deterministic(tmp_path: Path, fake_npm: Path, emoji_data: Path) -> None:
    again = tmp_path / "again"
    build_emoji_dataset(_config(fake_npm, again, seed=1))
    assert _digest(again) == _digest(emoji_data)
    other = tmp_path / "other"
    build_emoji_dataset(_config(fake_npm, other, seed=2, styles=("twemoji", "noto"), max_bases=6))
    assert json.loads((other / "splits.json").read_text())["styles"] == ["twemoji", "noto"]
    assert len(json.loads((other / "splits.json").read_text())["pictures"]["train"]) == 2


def test_svg_rendering_frames_the_drawing(fake_npm: Path) -> None:
    # a small square in a large viewBox fills the picture after framing; the background stays white
    svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><rect x="10" y="10" width="20" ' \
          'height="10" fill="#f00"/></svg>'
    im = render_svg(svg, 32)
    assert im.size == (32, 32) and im.mode == "RGB"
    assert im.getpixel((16, 16)) == (255, 0, 0) and im.getpixel((16, 1)) == (255, 255, 255)
    with pytest.raises(ValueError, match="draws nothing"):
        render_svg('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"></svg>')
    icons = IconSet(fake_npm, "noto")
    hand, mirrored = icons.render("waving-hand"), icons.render("waving-hand-mirrored")
    assert mirrored.tobytes() == hand.transpose(0).tobytes()  # the alias is its parent flipped left-right
    assert icons.sequences["\U0001F44B\u200d\u27a1"] == "waving-hand-mirrored"


def test_missing_packages_say_what_to_install(tmp_path: Path, fake_npm: Path, runner) -> None:
    with pytest.raises(EmojiSourceError, match="npm install --prefix .* @iconify-json/twemoji"):
        emoji_catalog(tmp_path / "node_modules", ("noto", "twemoji"))
    with pytest.raises(EmojiSourceError, match="npm install --prefix .* emoji-datasource-google"):
        emoji_catalog(fake_npm, ("noto",), ("emoji-datasource",))
    with pytest.raises(ValueError, match="styles=.*'ms-paint'"):
        emoji_catalog(fake_npm, ("noto", "ms-paint"))
    bad = tmp_path / "bad"
    write_icon_set(bad, "fluent")
    (bad / STYLES["fluent"].package / "package.json").write_text('{"license": "GPL-3.0"}')
    with pytest.raises(EmojiSourceError, match="licence 'GPL-3.0', expected 'MIT'"):
        IconSet(bad, "fluent")
    result = runner.invoke(app, ["data", "emoji", "--out", str(tmp_path / "o"), "--node-modules",
                                 str(tmp_path / "none"), "--styles", "openmoji"])
    assert result.exit_code == 1 and "npm install --prefix" in result.output
    assert "@iconify-json/openmoji" in result.output


def test_cli_builds_a_small_set(tmp_path: Path, fake_npm: Path, runner) -> None:
    out = tmp_path / "emoji"
    args = ["data", "emoji", "--out", str(out), "--node-modules", str(fake_npm), "--max-bases", "5", "--names", "none"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "styles noto, twemoji, openmoji, fluent" in result.output and "names icon sets" in result.output
    check = runner.invoke(app, ["data", "check", str(out / "train")])
    assert check.exit_code == 0, check.output
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output


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
    assert e.captions("twemoji") == ["red apple", "red apple, twemoji style", "red apple, fruit, food, twemoji style",
                                     "red apple, food and drink emoji", "red apple, food fruit, twemoji style"]
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


@needs_npm
def test_the_real_emoji_sets() -> None:
    catalog, pictures = emoji_catalog(NODE_MODULES)
    by_hex = {e.hexcode: e for e in catalog}
    assert set(pictures["1F431"]) == set(STYLES) and by_hex["1F431"].name == "cat face"
    beach = by_hex["1F3D6-FE0F"]
    assert beach.name == "beach with umbrella" and "umbrella" in beach.keywords
    assert beach.category == "travel & places"
    split = assign_splits(catalog)
    train = sum(len(pictures[e.hexcode]) for e in catalog if split[e.hexcode] == "train")
    assert train >= 12_000, train  # the floor for the training pictures


def test_scorer_retrieval_and_save(tmp_path: Path, emoji_data: Path) -> None:
    from pixlm.eval.clip_score import ContrastiveScorer, clip_score, retrieval
    from pixlm.train.clip_score import ScorerTrainConfig, train_scorer

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

    from safetensors import safe_open

    from pixlm.train.emoji import export_scorer

    shipped = export_scorer(path, emoji_data, tmp_path / "shipped")  # what --scorer-out writes
    notices = sorted(p.name for p in emoji_data.glob("LICENSE-*.txt"))
    assert notices and sorted(p.name for p in shipped.glob("LICENSE-*.txt")) == notices
    assert (shipped / "ATTRIBUTION.md").read_text() == (emoji_data / "ATTRIBUTION.md").read_text()
    with safe_open(str(shipped / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    copy = ContrastiveScorer.from_pretrained(shipped)
    assert torch.allclose(copy.embed_images(x), model.embed_images(x), atol=2e-2)


def test_bundled_names_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixlm.pipelines.text_to_image as pp

    import pixlm.inference

    seen = []
    monkeypatch.setattr(pp.TextToImagePipeline, "from_pretrained",
                        classmethod(lambda cls, p, device="cpu": seen.append(p)))
    monkeypatch.setattr(pixlm.inference, "optimize", lambda pipe, precision="auto", **kw: pipe)  # nothing loaded
    pp.load_pipeline("shapes")
    assert seen[-1] == pp.bundled_model_path("shapes-masked")
    if (Path(pp.__file__).parents[1] / "assets" / "emoji-masked" / "model_index.json").is_file():
        pp.load_pipeline("emoji")
        assert seen[-1].name == "emoji-masked"
    else:
        with pytest.raises(pp.CheckpointError, match="python -m pixlm.train.emoji"):
            pp.load_pipeline("emoji")
    pp.load_pipeline("shapes-teacher")  # the 8-step model the bundled student was distilled from
    assert seen[-1] == pp.bundled_model_path("shapes-masked") / "teacher"
    pp.load_pipeline("some/folder")
    assert Path(seen[-1]) == Path("some/folder")


def test_generate_with_the_bundled_emoji_model(tmp_path: Path, runner) -> None:
    from PIL import Image

    result = runner.invoke(app, ["generate", "a beach with palm trees", "--model", "emoji", "--seed", "0",
                                 "--out", str(tmp_path)])  # the bundled 4-step student, at its own steps
    assert result.exit_code == 0, result.output
    pngs = sorted(tmp_path.glob("*.png"))  # the output also carries model-loading progress bars
    assert len(pngs) == 1 and pngs[0].name in result.output
    png = pngs[0]
    with Image.open(png) as im:
        assert im.size == (64, 64)
        assert len(set(im.convert("RGB").getdata())) > 8  # a picture, not a flat colour


def test_tokenizer_stage_helpers(tmp_path: Path, emoji_data: Path, vq_dir: Path) -> None:
    import pixlm.train.tokenizer as tokenizer
    from pixlm.models.vq import VQModel
    from pixlm.train.common import psnr
    from pixlm.train.emoji import load_pictures, tokenizer_on_pictures, tokenizer_report

    pictures = load_pictures(emoji_data / "train")
    assert pictures.dtype == torch.uint8 and pictures.shape[1:] == (3, 64, 64)
    with tokenizer_on_pictures(pictures) as drawn:
        a, _, _ = tokenizer.shapes_batch(0, 5, 6)
        b, _, _ = tokenizer.shapes_batch(0, 5, 6)
    assert drawn == [(0, 5), (0, 5)] and torch.equal(a, b) and a.shape == (6, 3, 64, 64) and -1 <= float(a.min()) < float(a.max()) <= 1
    assert tokenizer.shapes_batch(0, 5, 6)[1]  # the original (captioned shapes scenes) is back
    report = tokenizer_report(vq_dir, emoji_data, splits=("test_emoji",), sheet=tmp_path / "sheet.png")
    from PIL import Image

    with Image.open(tmp_path / "sheet.png") as im:  # originals above round trips: two rows per style
        assert im.size == (12 * 64, 2 * len(report["test_emoji"]) * 64)
    assert set(report["test_emoji"]) <= set(STYLES) and 0 < report["codebook_usage"] <= 1
    ds = ImageFolder(emoji_data / "test_emoji")
    noto = torch.stack([ds[rows[0]]["image"] for rows in ds.pictures()
                        if ds.rows[rows[0]].file_name.startswith("noto/")])
    vq = VQModel.from_pretrained(vq_dir)
    assert report["test_emoji"]["noto"]["pictures"] == len(noto)
    assert report["test_emoji"]["noto"]["psnr"] == round(psnr(vq.decode(vq.encode(noto)), noto), 2)


def test_recipe_runs_to_the_tokenizer_and_checks_its_arguments(tmp_path: Path, fake_npm: Path) -> None:
    from pixlm.models.vq import VQModel
    from pixlm.train.emoji import EmojiRecipeConfig, run_recipe

    cfg = EmojiRecipeConfig(work=str(tmp_path / "w"), node_modules=str(fake_npm), stop_after="tokenizer",
                            tokenizer_steps=2, tokenizer_batch=2, tokenizer_levels="4,4,4",
                            tokenizer_channels="8,8,16,16", threads=1)
    model = run_recipe(cfg)
    assert json.loads((tmp_path / "w" / "data" / "splits.json").read_text())["styles"] == list(STYLES)
    assert VQModel.from_pretrained(model).config.levels == (4, 4, 4)
    with pytest.raises(ValueError, match="stop_after='tokeniser' must be one of"):
        run_recipe(EmojiRecipeConfig(work=str(tmp_path / "w"), stop_after="tokeniser"))
    with pytest.raises(ValueError, match="'4;4' must be comma-separated integers"):
        run_recipe(EmojiRecipeConfig(work=str(tmp_path / "v"), node_modules=str(fake_npm), stop_after="tokenizer",
                                     tokenizer_levels="4;4"))


def test_weights_export_and_import_let_another_machine_continue(tmp_path: Path, vq_dir: Path) -> None:
    """A session exports the finished tokenizer/decoder and the generator's checkpoint; a fresh WORK imports them:
    finished stages are skipped and the generator stage resumes at the exported step."""
    import shutil

    from pixlm.models.masked import MaskedConfig, MaskedTransformer
    from pixlm.train.bundle import start_from
    from pixlm.train.common import complete_checkpoints
    from pixlm.train.emoji import export_weights, import_weights

    work = tmp_path / "work"
    for part in ("tokenizer", "decoder"):
        shutil.copytree(vq_dir, work / part / "model")
    torch.manual_seed(0)
    gen = MaskedTransformer(MaskedConfig(vocab_size=64, dim=16, layers=1, heads=2, text_dim=16))
    assert start_from(work / "generator", gen, 0.05, 0, 40)
    dest = export_weights(work, tmp_path / "weights")
    assert sorted(p.name for p in dest.iterdir()) == ["decoder", "generator", "tokenizer"]
    assert not list(dest.rglob("*.pt"))  # weights only: no optimizer state
    fresh = tmp_path / "fresh"
    assert import_weights(dest, fresh, 0.05, 0) == ["tokenizer", "decoder", "generator (step 40)"]
    assert (fresh / "tokenizer" / "model" / ".complete").exists()
    (ckpt,) = complete_checkpoints(fresh / "generator")
    assert ckpt.name == "step-0000040"
    back = MaskedTransformer.from_pretrained(ckpt / "model")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), gen.state_dict().values()))
    from pixlm.models.vq import VQModel

    tok, src = VQModel.from_pretrained(fresh / "tokenizer" / "model"), VQModel.from_pretrained(vq_dir)
    assert all(torch.equal(a, b) for a, b in zip(tok.state_dict().values(), src.state_dict().values()))  # float32
    assert import_weights(dest, fresh, 0.05, 0) == []  # what WORK has is left alone
    with pytest.raises(FileNotFoundError, match="holds none of"):
        import_weights(tmp_path / "nothing", fresh, 0.05, 0)


def test_an_unfinished_run_can_be_assembled_from_its_newest_checkpoint(tmp_path: Path, vq_dir: Path,
                                                                       emoji_data: Path) -> None:
    import shutil

    from pixlm.models.masked import MaskedConfig, MaskedTransformer
    from pixlm.pipelines.text_to_image import load_pipeline
    from pixlm.train.bundle import start_from
    from pixlm.train.emoji import main

    work = tmp_path / "work"
    shutil.copytree(vq_dir, work / "tokenizer" / "model")
    shutil.copytree(emoji_data, work / "data")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        main(["--work", str(work), "--assemble-checkpoint", str(tmp_path / "out"), "--threads", "1"])
    torch.manual_seed(0)
    gen = MaskedTransformer(MaskedConfig(vocab_size=64, dim=16, layers=1, heads=2, text_dim=384))
    start_from(work / "generator", gen, 0.05, 0, 7)
    main(["--work", str(work), "--assemble-checkpoint", str(tmp_path / "out"), "--threads", "1"])
    pipe = load_pipeline(tmp_path / "out")
    assert (tmp_path / "out" / "ATTRIBUTION.md").is_file() and pipe.defaults["guidance_scale"] == 1.5
    assert torch.allclose(pipe.generator.tok_emb.weight.float(), gen.tok_emb.weight, atol=1e-2)  # float16 copy
    assert pipe("cat face, noto style", num_inference_steps=2, seed=0)[0].size == (64, 64)
