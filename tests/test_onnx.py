"""ONNX export and the ONNX Runtime backend: the same sampler loop on ORT sessions gives the PyTorch path's tokens."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from pixlm.checkpoint import CheckpointError
from pixlm.cli import app
from pixlm.inference.onnx import export_onnx
from pixlm.pipelines.text_to_image import load_pipeline
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.pipelines.retrieval import RetrievalIndex, text_encoder_id
from pixlm.testing import tiny_pipeline, tiny_pipeline_for

PROMPTS = ["a red circle", "two blue squares above a green triangle", "a small yellow diamond"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, runner) -> tuple[TextToImagePipeline, Path]:
    root = tmp_path_factory.mktemp("onnx")
    pipe = tiny_pipeline(seed=1)
    pipe.defaults.update(guidance_scale=2.5, revise_margin=3.0)  # copied into onnx_index.json
    g = torch.Generator().manual_seed(5)  # a retrieval index rides along (pixlm.pipelines.retrieval)
    pipe.attach_retrieval(RetrievalIndex(torch.randint(0, pipe.vq.vocab_size, (3, 64), generator=g),
                                         torch.randn(3, pipe.text_encoder.dim, generator=g), ["a", "b", "c"],
                                         text_encoder_id=text_encoder_id(pipe.text_encoder)))
    pipe.save_pretrained(root / "torch")
    result = runner.invoke(app, ["export", "onnx", "--model", str(root / "torch"), "--out", str(root / "onnx")])
    assert result.exit_code == 0, result.output
    return TextToImagePipeline.from_pretrained(root / "torch"), root / "onnx"


def test_export_writes_valid_graphs_and_the_sampler_settings(exported) -> None:
    pipe, out = exported
    index = json.loads((out / "onnx_index.json").read_text())
    assert index["defaults"] == pipe.defaults and index["generator"] == "masked"
    ort_index = load_pipeline(out, backend="onnxruntime").retrieval  # the index travels with the export
    assert ort_index is not None and torch.equal(ort_index.tokens, pipe.retrieval.tokens)
    graphs = ["text_encoder/model.onnx", "generator/hidden.onnx", "generator/head.onnx", "vq/decoder.onnx",
              "vq/encoder.onnx"]
    for name in graphs:
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model)
        assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) == index["opset"]
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is dynamic


def test_onnx_runtime_pipeline_matches_pytorch(exported) -> None:
    pipe, out = exported
    ort_pipe = load_pipeline(out, backend="onnxruntime")
    assert ort_pipe.defaults == pipe.defaults
    # Components: same numbers up to float rounding, at batch sizes and text lengths other than the export's.
    states, mask = pipe.text_encoder.encode(PROMPTS + [""])
    ort_states, ort_mask = ort_pipe.text_encoder.encode(PROMPTS + [""])
    assert torch.equal(mask, ort_mask) and torch.allclose(states, ort_states, atol=1e-5)
    tokens = torch.randint(0, pipe.generator.config.vocab_size + 1, (4, 64), generator=torch.Generator().manual_seed(0))
    prep, ort_prep = pipe.generator.prepare_text(states, mask), ort_pipe.generator.prepare_text(states, mask)
    assert torch.allclose(pipe.generator(tokens, prepared=prep), ort_pipe.generator(tokens, prepared=ort_prep),
                          atol=1e-4)
    grids = tokens[:, :64].remainder(pipe.vq.vocab_size).view(4, 8, 8)
    images = pipe.vq.decode(grids).detach()
    assert torch.allclose(images, ort_pipe.vq.decode(grids), atol=1e-4)
    assert torch.equal(pipe.vq.encode(images), ort_pipe.vq.encode(images))
    # The whole generation: the same sampler loop, the same seed → the same tokens but where a float tie flips.
    for n in (1, 2):  # batch 3 and 6 (with guidance: 6 and 12 generator rows)
        ref = pipe.generate(PROMPTS, num_images_per_prompt=n, seed=7)
        got = ort_pipe.generate(PROMPTS, num_images_per_prompt=n, seed=7)
        agreement = (ref.tokens == got.tokens).float().mean().item()
        print(f"ONNX Runtime vs PyTorch token agreement at batch {len(PROMPTS) * n}: {agreement:.4f}")
        assert agreement >= 0.99 and len(got.images) == len(PROMPTS) * n


def test_bad_input_is_named(exported, tmp_path: Path, runner) -> None:
    pipe, out = exported
    result = runner.invoke(app, ["export", "onnx", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "does not exist" in result.output and not (tmp_path / "o").exists()
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no ONNX export"):
        export_onnx(pipe, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="AutoregressiveTransformer"):
        export_onnx(tiny_pipeline_for("autoregressive"), tmp_path / "ar")
    with pytest.raises(CheckpointError, match="missing file"):
        load_pipeline(tmp_path, backend="onnxruntime")
