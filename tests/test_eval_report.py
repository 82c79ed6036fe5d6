"""`run_eval` and `pixlm eval`: scoring folders of images and fake pipelines end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pixlm.cli import app
from pixlm.data.shapes import COLORS, Scene, ShapeObject, render
from pixlm.data.specs import load_specs
from pixlm.eval.fid import sample_scene_for_spec
from pixlm.eval.report import run_eval

# Two prompts per dev category plus two paraphrases: 14 prompt-spec rows.
ROWS = [r for c in ("single_object", "position", "two_objects", "counting", "color_attribution", "relation")
        for r in [x for x in load_specs() if x["category"] == c][:2]]
ROWS += load_specs(Path(__file__).resolve().parents[1] / "src/pixlm/assets/paraphrase_prompts.jsonl")[:120:60]


def true_image(spec: dict, rng: random.Random) -> Image.Image:
    return render(sample_scene_for_spec(spec, rng))


def wrong_image(spec: dict, rng: random.Random) -> Image.Image:
    """A true scene plus one extra object: fails every exact spec."""
    scene = sample_scene_for_spec(spec, rng)
    used = {(o.row, o.col) for o in scene.objects}
    r, c = next(cell for cell in [(r, c) for r in range(3) for c in range(3)] if cell not in used)
    extra = ShapeObject("square", rng.choice(COLORS), "large", r, c)
    return render(Scene(scene.objects + [extra], scene.jitter + [(0.0, 0.0)]))


def write_folder(root: Path, make) -> Path:
    root.mkdir(parents=True)
    rng = random.Random(0)
    with open(root / "metadata.jsonl", "w") as f:
        for i, row in enumerate(ROWS):
            make(row["spec"], rng).save(root / f"img{i:03d}.png")
            f.write(json.dumps({**row, "file_name": f"img{i:03d}.png"}) + "\n")
    return root


class FakePipeline:
    """Stands in for ``pixlm.load_pipeline()``: draws each prompt's scene (or a wrong one) from its spec."""

    def __init__(self, make) -> None:
        self.specs = {r["prompt"]: r["spec"] for r in ROWS}
        self.make = make
        self.calls: list[dict] = []

    def __call__(self, prompt, num_images_per_prompt=1, num_inference_steps=8, guidance_scale=3.0, seed=None):
        prompts = [prompt] if isinstance(prompt, str) else prompt
        self.calls.append({"n": len(prompts), "steps": num_inference_steps, "seed": seed})
        rng = random.Random(seed)
        return [self.make(self.specs[p], rng).resize((128, 128)) for p in prompts for _ in range(num_images_per_prompt)]


def test_images_mode_true_renders_score_one(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "true", true_image)
    rep = run_eval(None, None, 1, str(tmp_path / "out"), images_dir=str(folder))
    assert rep["overall"] == 1.0 and rep["n_images"] == len(ROWS) and rep["n_failures"] == 0
    assert set(rep["categories"]) == {r["category"] for r in ROWS}
    assert all(c["accuracy"] == 1.0 and c["ci95"][1] == 1.0 for c in rep["categories"].values())
    assert rep["judge"]["agreement"] == 1.0 and rep["judge"]["heldout"]["clean"]["combined"] >= 0.99
    first = rep["images"][0]
    assert first["file_name"] == "img000.png" and first["ok"] is True and first["prompt"] == ROWS[0]["prompt"]
    assert first["found"] and set(first["found"][0]) == {"shape", "color", "size", "row", "col"}
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["overall"] == 1.0 and len(saved["images"]) == len(ROWS)
    assert "Inception" in saved["distribution"]["note"] and saved["fid"] >= 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**Overall: 100.0%**" in md and "| relation |" in md
    assert Image.open(tmp_path / "out" / "failures.png").size[0] > 0


def test_images_mode_wrong_images_score_zero(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "wrong", wrong_image)
    rep = run_eval(None, None, 1, str(tmp_path / "out"), images_dir=str(folder))
    assert rep["overall"] == 0.0 and rep["n_failures"] == len(ROWS)
    assert all(not im["ok"] for im in rep["images"])
    assert all(len(im["found"]) == len(r["spec"]["objects"]) + 1 for im, r in zip(rep["images"], ROWS))
    grid = Image.open(tmp_path / "out" / "failures.png")
    assert grid.size[0] >= 6 * 128 and grid.size[1] > 2 * 128  # 14 failures: 6 per row, with captions


def test_generation_mode_with_fake_pipelines(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    good = FakePipeline(true_image)
    rep = run_eval(None, str(prompts), 2, str(tmp_path / "good"), seed=5, steps=3, pipeline=good)
    assert rep["overall"] == 1.0 and rep["n_images"] == 2 * len(ROWS)
    assert [c["seed"] for c in good.calls] == [5] and good.calls[0]["steps"] == 3
    assert [im["prompt"] for im in rep["images"][:4]] == [ROWS[0]["prompt"]] * 2 + [ROWS[1]["prompt"]] * 2
    # The generated folder can be re-scored as-is with --images.
    again = run_eval(None, None, 1, str(tmp_path / "rescore"), images_dir=str(tmp_path / "good" / "images"))
    assert again["overall"] == 1.0 and again["n_images"] == 2 * len(ROWS)
    bad = run_eval(None, str(prompts), 1, str(tmp_path / "bad"), pipeline=FakePipeline(wrong_image))
    assert bad["overall"] == 0.0 and bad["categories"]["counting"]["ci95"][0] == 0.0
    assert bad["decoder_ceiling"] is None  # the fake pipeline has no tokenizer


def test_cli_eval_images(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "true", true_image)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--images", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "overall 1.000" in result.output and (out / "report.json").is_file() and (out / "report.md").is_file()
    missing = CliRunner().invoke(app, ["eval", "--images", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_images_mode_errors_name_the_row(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    render(Scene([])).save(root / "a.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "prompt": "a circle"}) + "\n")
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: missing 'spec'"):
        run_eval(None, None, 1, str(tmp_path / "o"), images_dir=str(root))
    spec = {"objects": [{"shape": "hexagon"}]}
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "prompt": "x", "spec": spec}) + "\n")
    with pytest.raises(ValueError, match=r":1: .*'hexagon'"):
        run_eval(None, None, 1, str(tmp_path / "o"), images_dir=str(root))
    row = {"file_name": "b.png", "prompt": "x", "spec": {"objects": [{"shape": "circle"}]}}
    (root / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r":1: image file .*b.png does not exist"):
        run_eval(None, None, 1, str(tmp_path / "o"), images_dir=str(root))
    with pytest.raises(ValueError, match="images_per_prompt=0"):
        run_eval(None, None, 0, str(tmp_path / "o"), images_dir=str(root))


def test_generation_mode_with_a_real_tiny_pipeline(tmp_path: Path) -> None:
    """The real pipeline API end to end: load from a model folder, generate, judge, report."""
    testing = pytest.importorskip("pixlm.testing")
    model = tmp_path / "model"
    testing.tiny_pipeline().save_pretrained(model)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--model", str(model), "--prompts", str(prompts),
                                      "--images-per-prompt", "2", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_images"] == 6 and rep["steps"] == 2 and rep["model"] == str(model)
    assert 0.0 <= rep["overall"] <= 1.0 and rep["timings"]["images_per_s"] > 0
    assert len(list((out / "images").glob("*.png"))) == 6
    ceiling = rep["decoder_ceiling"]  # true renders through the model's own tokenizer
    assert ceiling["n"] == 6 and 0.0 <= ceiling["accuracy"] <= 1.0
