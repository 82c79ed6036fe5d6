"""Prompt expansion inside the pipeline and on the command line (tiny models, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pixlm.cli import app
from pixlm.data.loose import vocabulary_words
from pixlm.models.expander_lm import ExpanderConfig, ExpanderLM, build_vocab
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.testing import tiny_pipeline
from pixlm.text.expander import BuiltinExpander, Expander

PAIRS = [("red ball up left", "a red circle in the top left"), ("a few blue things", "three blue squares")]


@pytest.fixture(scope="module")
def expander() -> BuiltinExpander:
    """A tiny built-in expander that has memorised PAIRS."""
    torch.manual_seed(0)
    lm = ExpanderLM(ExpanderConfig(vocab=build_vocab(vocabulary_words()), dim=32, layers=1, heads=2))
    x, y = lm.batch(PAIRS)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    for _ in range(80):
        loss = lm.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    exp = BuiltinExpander(lm)
    assert exp.expand_batch([a for a, _ in PAIRS]) == [b for _, b in PAIRS]
    return exp


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, expander: BuiltinExpander) -> Path:
    """A saved tiny pipeline whose folder ships the expander in expander/."""
    pipe = tiny_pipeline()
    pipe.expander = expander
    return pipe.save_pretrained(tmp_path_factory.mktemp("model") / "m")


class Upper(Expander):
    name = "upper"

    def _rewrite(self, prompts: list[str]) -> list[str | BaseException]:
        return [p.upper() for p in prompts]


def test_generate_returns_revised_prompts(expander: BuiltinExpander) -> None:
    pipe = tiny_pipeline()
    plain = pipe.generate("red ball up left", seed=0)
    assert plain.revised_prompts == [] and "expand_ms" not in plain.timings_ms
    out = pipe.generate([a for a, _ in PAIRS], num_images_per_prompt=2, seed=0, expand=expander)
    assert out.revised_prompts == out.prompts == [PAIRS[0][1]] * 2 + [PAIRS[1][1]] * 2
    assert out.timings_ms["expand_ms"] > 0
    direct = pipe.generate([b for _, b in PAIRS], num_images_per_prompt=2, seed=0)  # same as drawing the rewrite
    assert all((np.asarray(a) == np.asarray(b)).all() for a, b in zip(out.images, direct.images))
    assert pipe.generate("a dot", seed=0, expand=Upper()).revised_prompts == ["A DOT"]


def test_expand_true_needs_an_expander_and_loads_lazily(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="no expander"):
        tiny_pipeline().generate("a dot", expand=True)
    with pytest.raises(ValueError, match="expand='yes'"):
        tiny_pipeline().generate("a dot", expand="yes")  # type: ignore[arg-type]
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    assert pipe.expander is None and pipe.expander_path == model_dir / "expander"
    out = pipe.generate("red ball up left", seed=1, expand=True)
    assert out.revised_prompts == ["a red circle in the top left"]
    assert isinstance(pipe.expander, BuiltinExpander)
    assert (model_dir / "expander" / "model.safetensors").stat().st_size < 200_000  # float16 on disk


def test_saving_keeps_an_unloaded_expander(model_dir: Path, tmp_path: Path) -> None:
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    copy = pipe.save_pretrained(tmp_path / "copy")
    assert TextToImagePipeline.from_pretrained(copy).generate("a few blue things", expand=True).revised_prompts \
        == ["three blue squares"]


def test_cli_expand_and_generate(runner, model_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["expand", "red ball up left", "--model", str(model_dir / "expander")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "a red circle in the top left"
    result = runner.invoke(app, ["generate", "a few blue things", "--model", str(model_dir), "--expand",
                                 "--seed", "0", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "revised prompt: three blue squares" in result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    bad = runner.invoke(app, ["expand", "x", "--backend", "nope"])
    assert bad.exit_code == 1 and "backend='nope'" in bad.output
    missing = runner.invoke(app, ["expand", "x", "--model", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no built-in expander" in missing.output


def test_shipped_expander_rewrites_the_issue_examples() -> None:
    from pixlm.data.specs import parse_prompt
    from pixlm.text.expander import bundled_expander_path, make_expander

    if not (bundled_expander_path() / "model.safetensors").is_file():
        pytest.skip("no bundled expander installed")
    exp = make_expander("builtin")
    assert exp.model.num_params() < 2_000_000
    assert exp.expand("red ball up left") == "a red circle in the top left"
    assert exp.expand("2 red circles") == "two red circles"
    assert exp.expand("a red circle above a blue square") == "a red circle above a blue square"
    few = parse_prompt(exp.expand("a few blue things"))
    assert len(few["objects"]) in (2, 3) and all(o["color"] == "blue" for o in few["objects"])
