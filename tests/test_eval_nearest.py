"""Nearest-neighbour emoji recognition (`pixlm.eval.nearest`, `pixlm eval --emoji-data`) on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from pixlm.cli import app
from pixlm.eval.nearest import (image_feature, load_reference, make_prompt, parse_prompt, rank_one,
                                run_nearest_eval, sample_prompts, score, summarize)

# name → (colour, shape); each style draws it a little differently (size), like real emoji sets
SHAPES = {"red circle": ((220, 30, 30), "circle"), "blue square": ((30, 60, 220), "square"),
          "green triangle": ((30, 170, 60), "triangle"), "yellow bar": ((230, 200, 20), "bar"),
          "purple circle": ((140, 40, 170), "circle")}
TRAIN = ["red circle", "blue square", "green triangle", "yellow bar"]
HELD_OUT = ["purple circle"]


def draw(name: str, style: str, background: tuple[int, ...] = (255, 255, 255), size: int = 64) -> Image.Image:
    colour, shape = SHAPES[name]
    m = (10 if style == "noto" else 14) * size // 64
    img = Image.new("RGBA" if len(background) == 4 else "RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    box = [m, m, size - m, size - m]
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(size // 2, m), (m, size - m), (size - m, size - m)], fill=colour)
    else:
        d.rectangle([m, size // 2 - 6, size - m, size // 2 + 6], fill=colour)
    return img


def write_dataset(root: Path, styles: tuple[str, ...] = ("noto", "twemoji")) -> Path:
    """The `pixlm data emoji` layout: SPLIT/STYLE/HEX.png and several caption rows per picture, the name first."""
    for split, names in (("train", TRAIN), ("test_emoji", HELD_OUT)):
        rows = []
        for style in styles:
            (root / split / style).mkdir(parents=True)
            for k, name in enumerate(names):
                file = f"{style}/{k:04x}.png"
                draw(name, style).save(root / split / file)
                rows += [{"file_name": file, "text": text, "style": style, "hexcode": f"{k:04X}"}
                         for text in (name, f"{name}, {style} style", f"{name}, shapes emoji")]
        (root / split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("emoji"))


def test_reference_reads_each_picture_once_with_its_name_style_and_split(data: Path) -> None:
    ref = load_reference(data)
    assert len(ref) == 10 and ref.style_counts() == {"noto": 5, "twemoji": 5}
    assert ref.names[:4] == TRAIN and ref.splits.count("test_emoji") == 2
    only = load_reference(data, ["train"], ["twemoji"])
    assert len(only) == 4 and set(only.styles) == {"twemoji"}


def test_a_real_picture_ranks_itself_first_among_its_style(data: Path) -> None:
    ref = load_reference(data)
    items = score(ref, [ref.image(i) for i in range(len(ref))],
                  [make_prompt(n, s) for n, s in zip(ref.names, ref.styles)])
    assert [it["rank"] for it in items] == [1] * len(ref)
    assert all(it["candidates"] == 5 for it in items)  # ranked only among its own style
    assert all(ref.styles[i] == it["style"] for it in items for i in it["nearest"])


def test_feature_ignores_transparency_size_one_pixel_shifts_and_speckles(data: Path) -> None:
    ref = load_reference(data, ["train"], ["noto"])
    white = image_feature(draw("red circle", "noto"))
    transparent = image_feature(draw("red circle", "noto", background=(255, 255, 255, 0)))
    assert np.abs(white - transparent).max() < 1e-6
    big = image_feature(draw("red circle", "noto", size=128))
    shifted = image_feature(Image.fromarray(np.roll(np.asarray(draw("red circle", "noto")), 1, axis=1)))
    speckled = np.asarray(draw("red circle", "noto")).copy()
    rng = np.random.default_rng(0)
    speckled[rng.integers(0, 64, 20), rng.integers(0, 64, 20)] = 0  # 20 black pixels
    others = min(np.linalg.norm(white - ref.features[i]) for i in range(len(ref)) if ref.names[i] != "red circle")
    for near in (big, shifted, image_feature(Image.fromarray(speckled))):
        assert np.linalg.norm(white - near) < 0.15 * others
    # the same shape in another colour is far: colour decides
    purple = image_feature(draw("purple circle", "noto"))
    assert np.linalg.norm(white - purple) > 0.5 * others


def test_prompt_parsing() -> None:
    assert parse_prompt("cat face, twemoji style") == ("cat face", "twemoji")
    assert parse_prompt("thumbs up, dark skin tone, noto style") == ("thumbs up, dark skin tone", "noto")
    assert parse_prompt("  keycap: A ,  OpenMoji style") == ("keycap: A", "openmoji")
    assert parse_prompt("cat face") == ("cat face", None)
    assert parse_prompt("a beach in retro style") == ("a beach in retro style", None)  # no ", WORD style" clause
    with pytest.raises(ValueError, match="'blue'.*noto"):
        parse_prompt("cat face, blue style")
    with pytest.raises(ValueError, match="empty"):
        parse_prompt("  ")


def test_a_prompt_without_style_ranks_among_every_style_and_unknown_names_miss(data: Path) -> None:
    ref = load_reference(data)
    items = score(ref, [draw("blue square", "twemoji"), draw("red circle", "noto")], ["blue square", "pizza, noto style"])
    assert items[0]["rank"] == 1 and items[0]["style"] is None and items[0]["candidates"] == len(ref)
    assert items[1]["rank"] is None
    s = summarize(items)
    assert s["top1"] == s["top5"] == 0.5 and s["unknown_names"] == 1
    assert {k: (v["n"], v["top1"], v["top5"]) for k, v in s["per_style"].items()} == {"any": (1, 1.0, 1.0),
                                                                                     "noto": (1, 0.0, 0.0)}


def test_a_wrong_picture_is_not_a_hit_at_one(data: Path) -> None:
    ref = load_reference(data, styles=["noto"])
    it = score(ref, [draw("green triangle", "noto")], ["yellow bar, noto style"])[0]
    assert it["rank"] > 1 and it["nearest_names"][0] == "green triangle"


def test_prompts_are_sampled_with_a_seed_from_the_split_and_styles(data: Path) -> None:
    ref = load_reference(data)
    a = sample_prompts(ref, "train", 5, ["noto", "twemoji"], seed=1)
    assert a == sample_prompts(ref, "train", 5, ["noto", "twemoji"], seed=1)
    assert len(set(a)) == 5 and a != sample_prompts(ref, "train", 5, ["noto", "twemoji"], seed=2)
    assert all(parse_prompt(p)[0] in TRAIN for p in a)
    assert {parse_prompt(p)[1] for p in sample_prompts(ref, "train", 9, ["twemoji"], seed=0)} == {"twemoji"}
    assert len(sample_prompts(ref, "test_emoji", 50, None, seed=0)) == 2  # fewer when the split has fewer


def test_bad_input_names_the_value(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        load_reference(tmp_path / "nope")
    with pytest.raises(ValueError, match="'validation'"):
        load_reference(data, ["validation"])
    with pytest.raises(ValueError, match="'crayon'"):
        load_reference(data, styles=["crayon"])
    ref = load_reference(data)
    with pytest.raises(ValueError, match="'fluent'"):
        sample_prompts(ref, "train", 3, ["fluent"], seed=0)  # a known style this data does not draw
    with pytest.raises(ValueError, match="'fluent'"):
        rank_one(ref, image_feature(draw("red circle", "noto")), "red circle", "fluent")
    with pytest.raises(ValueError, match="'test_variant'"):
        sample_prompts(ref, "test_variant", 3, None, seed=0)


class LookupPipeline:
    """Draws each prompt's own shape in its style: a perfect generator for this data."""

    def __call__(self, prompts: list[str], seed: int = 0, **options) -> list[Image.Image]:
        return [draw(*parse_prompt(p)) for p in prompts]


def test_a_perfect_generator_scores_one_and_the_folder_rescores_the_same(data: Path, tmp_path: Path) -> None:
    rep = run_nearest_eval(data, tmp_path / "out", pipeline=LookupPipeline(), n=6, seed=3)
    assert rep["summary"]["top1"] == 1.0 and rep["summary"]["n"] == 6
    again = run_nearest_eval(data, tmp_path / "again", images_dir=tmp_path / "out" / "images")
    assert [r["rank"] for r in again["images"]] == [r["rank"] for r in rep["images"]]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["images"][0]["nearest_files"][0].endswith(".png")


def test_cli_generates_with_a_tiny_pipeline_and_writes_the_report(data: Path, tmp_path: Path) -> None:
    from pixlm import testing

    model = tmp_path / "model"
    testing.tiny_pipeline().save_pretrained(model)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", "--emoji-data", str(data), "--model", str(model), "--out", str(out),
                                      "--names", "3", "--styles", "noto", "--steps", "2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "top-5" in result.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["n"] == 3 and set(rep["summary"]["per_style"]) == {"noto"}
    assert rep["reference"]["pictures"] == {"noto": 5}
    assert all(r["candidates"] == 5 and r["rank"] is not None for r in rep["images"])
    assert (out / "report.md").read_text().count("| noto | 3 |") == 1
    assert Image.open(out / "sheet.png").size[0] > 64 and len(list((out / "images").glob("*.png"))) == 3

    bad = CliRunner().invoke(app, ["eval", "--emoji-data", str(data), "--model", str(model), "--out", str(out),
                                   "--styles", "noto,crayon"])
    assert bad.exit_code == 1 and "'crayon'" in bad.output
    shapes_only = CliRunner().invoke(app, ["eval", "--emoji-data", str(data), "--prompts", "dev.jsonl",
                                           "--out", str(out)])
    assert shapes_only.exit_code == 1 and "--prompts='dev.jsonl'" in shapes_only.output
    missing = CliRunner().invoke(app, ["eval", "--emoji-data", str(tmp_path / "absent"), "--out", str(out)])
    assert missing.exit_code == 1 and "absent" in missing.output
