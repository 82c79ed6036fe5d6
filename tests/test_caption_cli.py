"""`pixlm caption`, `pixlm edit` and `pixlm generate --rerank` on a tiny saved pipeline."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from pixlm.cli import app
from pixlm.data.shapes import random_scene, render
from pixlm.models.captioner import Captioner, CaptionerConfig, build_vocab, tokenizer_fingerprint
from pixlm.data.detailed import detailed_caption
from pixlm.testing import tiny_pipeline


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny model folder with a captioner, the same without)."""
    root = tmp_path_factory.mktemp("models")
    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "plain")
    torch.manual_seed(0)
    vocab = build_vocab([detailed_caption(random_scene(random.Random(i))) for i in range(100)])
    pipe.captioner = Captioner(CaptionerConfig(vocab=vocab, image_vocab_size=pipe.vq.vocab_size, dim=32,
                                               encoder_layers=1, decoder_layers=1, heads=2,
                                               tokenizer_id=tokenizer_fingerprint(pipe.vq)))
    pipe.save_pretrained(root / "with_captioner")
    return root / "with_captioner", root / "plain"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("pics")
    paths = []
    for i in range(2):
        p = root / f"p{i}.png"
        render(random_scene(random.Random(i))).save(p)
        paths.append(p)
    return paths


def test_caption_prints_one_line_per_image(runner, model_dirs, pictures) -> None:
    model = str(model_dirs[0])
    for extra in ([], ["--detailed", "--method", "beam", "--beams", "2"], ["--method", "sample", "--seed", "1"]):
        result = runner.invoke(app, ["caption", *map(str, pictures), "--model", model, *extra])
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 2


def test_caption_errors_are_one_line(runner, model_dirs, pictures, tmp_path) -> None:
    result = runner.invoke(app, ["caption", str(pictures[0]), "--model", str(model_dirs[1])])
    assert result.exit_code == 1 and "no captioner" in result.output
    result = runner.invoke(app, ["caption", str(tmp_path / "missing.png"), "--model", str(model_dirs[0])])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["caption", str(pictures[0]), "--model", str(model_dirs[0]), "--method", "nope"])
    assert result.exit_code == 1 and "method=" in result.output


def test_edit_writes_pictures_for_every_mode(runner, model_dirs, pictures, tmp_path) -> None:
    model = str(model_dirs[1])
    mask = tmp_path / "mask.png"
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (0, 0, 24, 24))
    m.save(mask)
    runs = {
        "inpaint": ["--mask", str(mask), "-n", "2"],
        "variation": ["--strength", "0.3"],
        "outpaint": ["--extend", "right=16"],
    }
    for mode, extra in runs.items():
        out = tmp_path / mode
        result = runner.invoke(app, ["edit", str(pictures[0]), "a red circle", "--mode", mode, "--model", model,
                                     "--seed", "0", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        paths = [Path(line) for line in result.stdout.splitlines()]
        assert paths and all(p.is_file() for p in paths)
        if mode == "outpaint":
            assert Image.open(paths[0]).size == (80, 64)
    scene = random_scene(random.Random(0)).to_dicts()
    first = scene[0]
    same = [o for o in scene if o["shape"] == first["shape"]]
    target = f"the {first['shape']}" if len(same) == 1 else f"the {first['shape']} " + \
        {(0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right", (1, 0): "on the left",
         (1, 1): "in the center", (1, 2): "on the right", (2, 0): "in the bottom left", (2, 1): "at the bottom",
         (2, 2): "in the bottom right"}[(first["row"], first["col"])]
    result = runner.invoke(app, ["edit", str(pictures[0]), f"remove {target}", "--mode", "instruct", "--model",
                                 model, "--seed", "0", "--out", str(tmp_path / "instruct")])
    assert result.exit_code == 0, result.output


def test_edit_errors_are_one_line(runner, model_dirs, pictures, tmp_path) -> None:
    model = str(model_dirs[1])
    base = ["edit", str(pictures[0]), "a red circle", "--model", model, "--out", str(tmp_path / "o")]
    cases = [(["--mode", "erase"], "--mode 'erase'"), (["--mode", "outpaint"], "needs --extend"),
             (["--mode", "inpaint"], "no mask given"), (["--mode", "outpaint", "--extend", "right=5"], "multiple of 8"),
             (["--mode", "variation", "--extend", "right=8"], "only apply to --mode outpaint")]
    for extra, message in cases:
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 1 and message in result.output, (extra, result.output)
    result = runner.invoke(app, ["edit", str(pictures[0]), "remove the zebra", "--mode", "instruct", "--model", model,
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown word 'zebra'" in result.output


def test_generate_rerank(runner, model_dirs, tmp_path) -> None:
    result = runner.invoke(app, ["generate", "two red circles", "--model", str(model_dirs[0]), "--rerank", "3",
                                 "-n", "2", "--seed", "0", "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    pngs = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    assert len(pngs) == 3  # two images and a contact sheet
    result = runner.invoke(app, ["generate", "a cat on a mat", "--model", str(model_dirs[0]), "--rerank", "2",
                                 "--out", str(tmp_path / "g")])
    assert result.exit_code == 1 and "shapes grammar" in result.output
