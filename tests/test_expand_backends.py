"""Expander backends: built-in validation, a tiny random Hugging Face GPT-2, and a stub OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from pixlm.checkpoint import CheckpointError
from pixlm.data.loose import vocabulary_words
from pixlm.models.expander_lm import ExpanderConfig, ExpanderLM, build_vocab
from pixlm.text.expander import (BuiltinExpander, ExpansionWarning, HFExpander, OpenAIExpander, clean_answer,
                                 load_expander_dir, make_expander)


def test_clean_answer() -> None:
    assert clean_answer("Caption: \"a red circle.\"\nmore text") == "a red circle"
    assert clean_answer("\n\n  two blue squares  \n") == "two blue squares"
    assert clean_answer("   ") == ""


def test_builtin_rejects_output_outside_the_grammar() -> None:
    torch.manual_seed(0)
    lm = ExpanderLM(ExpanderConfig(vocab=build_vocab(vocabulary_words()), dim=16, layers=1, heads=2))
    raw = lm.rewrite(["red ball up left"])[0]
    with pytest.warns(ExpansionWarning, match="not in the caption grammar|returned nothing"):
        assert BuiltinExpander(lm).expand("red ball up left") == "red ball up left"
    if raw:  # without validation the raw words come through
        assert BuiltinExpander(lm, validate=False).expand("red ball up left") == raw
    with warnings.catch_warnings(record=True) as caught:  # too long: falls back alone, the batch survives
        warnings.simplefilter("always")
        out = BuiltinExpander(lm).expand_batch(["red " * 100, "dot"])
    assert out[0] == ("red " * 100).strip()
    assert any("reads at most" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="non-empty strings"):
        BuiltinExpander(lm).expand_batch(["ok", ""])


# ---------------------------------------------------------------------------------------------- Hugging Face
@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer GPT-2 with a word-level tokenizer, saved like any local Hugging Face model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[EOS]", *sorted({w for p in vocabulary_words() for w in p.split()})]
    words += [w for w in ("request", "caption", "rewrite", "Request", "Caption") if w not in words]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=512, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id))
    path = tmp_path_factory.mktemp("gpt2") / "tiny"
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_hf_backend_decodes_greedily(tiny_gpt2: Path) -> None:
    exp = HFExpander(tiny_gpt2, max_new_tokens=6)
    assert not exp.use_chat_template
    inputs = exp.tokenizer(exp.template.replace("{prompt}", "red ball up left"), return_tensors="pt")
    ids = exp.model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=exp.tokenizer.pad_token_id)
    want = clean_answer(exp.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExpansionWarning)  # an empty answer falls back, also fine
        got = exp.expand("red ball up left")
    assert got == (want or "red ball up left")
    assert exp.expand_batch(["red ball up left", "blue box"])[0] == got  # deterministic
    # Random weights write word salad: with validation on it is rejected and the prompt kept.
    strict = HFExpander(tiny_gpt2, max_new_tokens=6, validate=True)
    with pytest.warns(ExpansionWarning):
        assert strict.expand("blue box") == "blue box"


def test_hf_backend_template_chat_and_folder_loading(tiny_gpt2: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prompt"):
        HFExpander(tiny_gpt2, template="no field here")
    with pytest.raises(CheckpointError, match="not a Hugging Face model folder"):
        HFExpander(tmp_path)
    exp = HFExpander(tiny_gpt2, template="Request: {prompt}\nCaption:", max_new_tokens=3)
    exp.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}Caption:"
    exp.use_chat_template = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExpansionWarning)
        assert isinstance(exp.expand("red ball"), str)
    exp.use_chat_template = False
    exp.save_pretrained(tmp_path / "expander")  # what a model folder's expander/ may hold
    back = load_expander_dir(tmp_path / "expander")
    assert isinstance(back, HFExpander) and back.template == "Request: {prompt}\nCaption:"
    assert make_expander("hf", str(tmp_path / "expander")).template == back.template


# ---------------------------------------------------------------------------------------------- OpenAI-compatible
class _Stub(BaseHTTPRequestHandler):
    mode = "ok"
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if _Stub.mode == "slow":
            time.sleep(1.0)
        if _Stub.mode == "500":
            self.send_error(500, "boom")
            return
        prompt = body["messages"][-1]["content"]
        content = {"ok": f"Caption: \"a red circle in the top left.\"\n(from {prompt})", "garbage": "sure thing!"}
        payload = {"choices": [{"message": {"role": "assistant", "content": content.get(_Stub.mode, "x")}}]}
        if _Stub.mode == "nojson":
            payload = {"error": "nope"}
        data = json.dumps(payload).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (the timeout test)
            pass

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def stub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_backend_sends_chat_request(stub_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXLM_TEST_KEY", "sk-test")
    _Stub.mode, _Stub.seen = "ok", []
    exp = OpenAIExpander(stub_url, "tiny-llm", api_key_env="PIXLM_TEST_KEY", validate=True)
    assert exp.expand("red ball up left") == "a red circle in the top left"
    req = _Stub.seen[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "tiny-llm" and req["body"]["temperature"] == 0
    assert req["body"]["messages"][0]["role"] == "system"
    assert req["body"]["messages"][-1] == {"role": "user", "content": "red ball up left"}
    monkeypatch.delenv("PIXLM_TEST_KEY")
    exp.expand("blue box")
    assert _Stub.seen[-1]["auth"] is None  # no key in the environment: no header


@pytest.mark.parametrize("mode,match", [("500", "HTTP 500"), ("slow", "within 0.3 s"), ("nojson", "no choices"),
                                        ("garbage", "not in the caption grammar")])
def test_openai_backend_falls_back(stub_url: str, mode: str, match: str) -> None:
    _Stub.mode = mode
    exp = OpenAIExpander(stub_url, "tiny-llm", timeout_s=0.3, validate=True)
    start = time.perf_counter()
    with pytest.warns(ExpansionWarning, match=match):
        assert exp.expand_batch(["red ball up left", "blue box"]) == ["red ball up left", "blue box"]
    assert time.perf_counter() - start < 1.8  # two timed-out requests, not two full sleeps plus slack
    _Stub.mode = "ok"


def test_openai_backend_unreachable_and_bad_arguments() -> None:
    exp = OpenAIExpander("http://127.0.0.1:9/v1", "m", timeout_s=0.5)
    with pytest.warns(ExpansionWarning, match="no answer"):
        assert exp.expand("red ball") == "red ball"
    with pytest.raises(ValueError, match="base_url"):
        OpenAIExpander("localhost:8080", "m")
    with pytest.raises(ValueError, match="backend='gpt'"):
        make_expander("gpt")
    with pytest.raises(ValueError, match="needs model"):
        make_expander("openai")
