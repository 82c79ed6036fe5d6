"""pixlm's own BERT (text/bert.py) reads MiniLM's files exactly as transformers' BertModel does."""

from __future__ import annotations

import sys

import pytest
import torch

from pixlm.text.bert import BertConfig, BertModel, BertTokenizer
from pixlm.text.encoder import TextEncoder, TextEncoderConfig, minilm_path

PROMPTS = ["two red circles above a blue square", "Draw me a BIG azure box!!", "ünïcödé café naïve — 3×3 grid",
           "a " * 80, "x", "tangerine rhombus, lower-right corner."]


def test_matches_transformers_bert_on_minilm() -> None:
    transformers = pytest.importorskip("transformers")
    path = minilm_path()
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    hf = transformers.AutoModel.from_pretrained(path).eval()
    ours, tok = BertModel.from_folder(path), BertTokenizer(path, max_length=48)
    ref = hf_tok(PROMPTS, padding=True, truncation=True, max_length=48, return_tensors="pt")
    ids, mask = tok(PROMPTS)
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"].bool())
    with torch.no_grad():
        want = hf(**ref).last_hidden_state
        got = ours(ids, mask)
    real = mask[..., None]
    assert ((want - got).abs() * real).max() < 1e-4


def test_default_encoder_does_not_import_transformers() -> None:
    import subprocess

    code = ("import sys; from pixlm.text.encoder import TextEncoder, TextEncoderConfig; "
            "e = TextEncoder(TextEncoderConfig()); s, m = e.encode(['a red circle']); "
            "assert s.shape[-1] == 384 and m.all(); assert 'transformers' not in sys.modules, 'transformers imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_bad_text_and_bad_folders_are_clear_errors(tmp_path) -> None:
    enc = TextEncoder(TextEncoderConfig())
    with pytest.raises(ValueError, match="not valid Unicode"):
        enc.encode(["a red \ud800 circle"])
    with pytest.raises(TypeError, match="strings"):
        enc.tokenizer([3])
    from pixlm.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no model.safetensors"):
        BertModel.from_folder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_act": "relu"}')
    with pytest.raises(CheckpointError, match="gelu"):
        BertConfig.from_json(tmp_path / "config.json")
