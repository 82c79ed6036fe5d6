"""Prompt expansion: a language model rewrites a loose prompt as a precise caption before the image is drawn.

One interface, ``Expander.expand(prompt) -> str`` (and ``expand_batch``), three backends:

- ``BuiltinExpander``: the tiny word-level LM of ``models/expander_lm.py`` trained on the shapes world; its output
  is checked with ``specs.parse_prompt`` and replaced by the original prompt when it does not parse.
- ``HFExpander``: any local Hugging Face causal-LM folder (``AutoModelForCausalLM``) with a prompt template
  (or the tokenizer's chat template).
- ``OpenAIExpander``: any OpenAI-compatible ``/chat/completions`` endpoint (llama.cpp, vLLM, Ollama, ...); the
  key, if any, is read from an environment variable.

Expansion never breaks generation: a failure, timeout, empty answer or (when ``validate``) an answer outside
the caption grammar keeps the original prompt and emits an ``ExpansionWarning``.

A model folder may carry its expander in an ``expander/`` subfolder: either a built-in checkpoint
(``config.json`` with ``"kind": "expander_lm"``) or a Hugging Face causal LM (optionally with ``expander.json``
holding ``{"template": ...}``); ``load_expander_dir`` reads either.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import warnings
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Any

from pixlm.checkpoint import CheckpointError, read_json

BACKENDS = ("builtin", "hf", "openai")
BUNDLED_EXPANDER = ("shapes-masked", "expander")

INSTRUCTIONS = (
    "Rewrite the user's picture request as one caption in this exact grammar and answer with the caption only. "
    "An object is a shape (circle, square, triangle, diamond) with an optional size (small, large) before an "
    "optional colour (red, orange, yellow, green, cyan, blue, purple, pink). Counts are a/an, two, three, four, "
    "with plural nouns. A single object may take one position: in the top left, at the top, in the top right, "
    "on the left, in the center, on the right, in the bottom left, at the bottom, in the bottom right. Or two "
    "objects may be related: above, below, to the left of, to the right of. Join clauses with ', ' and a final "
    "' and '. At most four objects; name a shape even when the request does not."
)
EXAMPLES = (
    ("red ball up left", "a red circle in the top left"),
    ("a few blue things", "three blue squares"),
    ("2 tiny green boxes + big pink rhombus over a yellow tri", "two small green squares and a large pink "
                                                               "diamond above a yellow triangle"),
)
DEFAULT_TEMPLATE = INSTRUCTIONS + "\n\n" + "".join(f"Request: {a}\nCaption: {b}\n\n" for a, b in EXAMPLES) + \
    "Request: {prompt}\nCaption:"


class ExpansionWarning(UserWarning):
    """An expansion failed or was rejected; the original prompt is used instead."""


def _warn(message: str) -> None:
    warnings.warn(message, ExpansionWarning, stacklevel=4)


def _check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise ValueError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompts must be non-empty strings, got {p!r}")
    return [p.strip() for p in prompts]


def clean_answer(text: str) -> str:
    """First non-empty line of a model's answer, without a "Caption:" label, quotes or a final full stop."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            break
    else:
        return ""
    for label in ("caption:", "rewrite:", "answer:"):
        if line.lower().startswith(label):
            line = line[len(label):].strip()
    line = line.strip("\"'`“”").strip()
    return line[:-1] if line.endswith(".") else line


def parses(text: str) -> bool:
    """True when ``text`` is in the shapes caption grammar (``specs.parse_prompt``)."""
    from pixlm.data.specs import SpecError, parse_prompt

    try:
        parse_prompt(text)
    except SpecError:
        return False
    return True


class Expander(ABC):
    """Rewrites prompts; never raises at expansion time (failures keep the original prompt, with a warning)."""

    name = "expander"

    def __init__(self, validate: bool = False) -> None:
        self.validate = validate

    @abstractmethod
    def _rewrite(self, prompts: list[str]) -> list[str | BaseException]:
        """Raw rewrites, one per prompt; an exception item marks that prompt's failure."""

    def expand_batch(self, prompts: list[str]) -> list[str]:
        """The rewrite of each prompt (or the prompt itself where expansion failed or was rejected)."""
        prompts = _check_prompts(prompts)
        if not prompts:
            return []
        try:
            outs = self._rewrite(prompts)
            if len(outs) != len(prompts):
                raise RuntimeError(f"got {len(outs)} rewrites for {len(prompts)} prompts")
        except Exception as e:  # any backend failure: keep the prompts, say why
            _warn(f"{self.name} expander failed ({type(e).__name__}: {e}); keeping the original prompt(s)")
            return list(prompts)
        return [self._accept(p, o) for p, o in zip(prompts, outs)]

    def expand(self, prompt: str) -> str:
        """The rewrite of one prompt."""
        return self.expand_batch([prompt])[0]

    def _accept(self, prompt: str, out: str | BaseException) -> str:
        if isinstance(out, BaseException):
            _warn(f"{self.name} expander failed on {prompt!r} ({type(out).__name__}: {out}); keeping it")
            return prompt
        text = clean_answer(out)
        if not text:
            _warn(f"{self.name} expander returned nothing for {prompt!r}; keeping it")
            return prompt
        if self.validate and not parses(text):
            _warn(f"{self.name} expander rewrote {prompt!r} as {text!r}, which is not in the caption grammar; "
                  "keeping the original")
            return prompt
        return text

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the expander as a model folder's ``expander/`` subfolder (local backends only)."""
        raise ValueError(f"the {self.name} expander cannot be saved into a model folder")


# ---------------------------------------------------------------------------------------------- built-in
class BuiltinExpander(Expander):
    """The shapes-world expander trained from scratch (``python -m pixlm.train.expander``)."""

    name = "builtin"

    def __init__(self, model: Any, validate: bool = True) -> None:
        super().__init__(validate)
        self.model = model.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, validate: bool = True) -> "BuiltinExpander":
        from pixlm.models.expander_lm import ExpanderLM

        return cls(ExpanderLM.from_pretrained(directory), validate)

    def save_pretrained(self, directory: str | os.PathLike, dtype: Any = None) -> Path:
        import torch

        return self.model.save_pretrained(directory, dtype=torch.float16 if dtype is None else dtype)

    def _rewrite(self, prompts: list[str]) -> list[str | BaseException]:
        import torch

        outs: list[str | BaseException] = []
        with torch.inference_mode():
            for p in prompts:  # one bad prompt (too long, no words) must not sink the others
                try:
                    outs.append(self.model.rewrite([p])[0])
                except ValueError as e:
                    outs.append(e)
        return outs

    def expand_batch(self, prompts: list[str]) -> list[str]:
        """Batched decoding when every prompt fits; per-prompt otherwise."""
        prompts = _check_prompts(prompts)
        if len(prompts) > 1:
            import torch

            try:
                with torch.inference_mode():
                    outs: list[str | BaseException] = list(self.model.rewrite(prompts))
                return [self._accept(p, o) for p, o in zip(prompts, outs)]
            except ValueError:
                pass  # some prompt does not fit: fall through to one at a time, which names it
        return super().expand_batch(prompts)


# ---------------------------------------------------------------------------------------------- Hugging Face
class HFExpander(Expander):
    """A local Hugging Face causal LM and a template with a ``{prompt}`` field; greedy decoding."""

    name = "hf"

    def __init__(self, path: str | os.PathLike, template: str | None = None, max_new_tokens: int = 48,
                 timeout_s: float = 30.0, validate: bool = False, device: str = "cpu",
                 use_chat_template: bool | None = None) -> None:
        super().__init__(validate)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{str(path)!r} is not a Hugging Face model folder (no config.json)")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0")
        extra = read_json(path / "expander.json") if (path / "expander.json").is_file() else {}
        self.template = template or extra.get("template") or DEFAULT_TEMPLATE
        if "{prompt}" not in self.template:
            raise ValueError(f"template must contain a {{prompt}} field, got {self.template[:80]!r}")
        self.path, self.max_new_tokens, self.timeout_s, self.device = path, max_new_tokens, timeout_s, device
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
        has_chat = getattr(self.tokenizer, "chat_template", None) is not None
        self.use_chat_template = has_chat if use_chat_template is None else use_chat_template
        if self.use_chat_template and not has_chat:
            raise ValueError(f"use_chat_template=True but the tokenizer in {path} has no chat template")

    def _inputs(self, prompt: str) -> Any:
        if self.use_chat_template:
            messages = [{"role": "system", "content": INSTRUCTIONS}]
            for a, b in EXAMPLES:
                messages += [{"role": "user", "content": a}, {"role": "assistant", "content": b}]
            messages.append({"role": "user", "content": prompt})
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)
            return {k: v.to(self.device) for k, v in ids.items()}
        return self.tokenizer(self.template.replace("{prompt}", prompt), return_tensors="pt").to(self.device)

    def _rewrite(self, prompts: list[str]) -> list[str | BaseException]:
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        outs: list[str | BaseException] = []
        for p in prompts:
            try:
                inputs = self._inputs(p)
                with torch.inference_mode():
                    ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                              max_time=self.timeout_s, pad_token_id=pad)
                new = ids[0, inputs["input_ids"].shape[1]:]
                outs.append(self.tokenizer.decode(new, skip_special_tokens=True))
            except Exception as e:  # a failing prompt falls back alone
                outs.append(e)
        return outs

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        from pixlm.checkpoint import atomic_write_dir

        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            (tmp / "expander.json").write_text(json.dumps({"template": self.template}, indent=2) + "\n")

        return atomic_write_dir(directory, write)


# ---------------------------------------------------------------------------------------------- OpenAI-compatible
class OpenAIExpander(Expander):
    """An OpenAI-compatible chat-completions server; one request per prompt, ``timeout_s`` each."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 10.0,
                 max_tokens: int = 64, validate: bool = False, system_prompt: str = INSTRUCTIONS) -> None:
        super().__init__(validate)
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r} must start with http:// or https://")
        if not model:
            raise ValueError("model must name the server's model, got an empty string")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.timeout_s = model, api_key_env, timeout_s
        self.max_tokens, self.system_prompt = max_tokens, system_prompt

    def _request(self, prompt: str) -> str:
        messages = [{"role": "system", "content": self.system_prompt}]
        for a, b in EXAMPLES:
            messages += [{"role": "user", "content": a}, {"role": "assistant", "content": b}]
        messages.append({"role": "user", "content": prompt})
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.url} answered HTTP {e.code}") from None
        except (TimeoutError, OSError) as e:  # URLError and socket timeouts are OSErrors
            raise RuntimeError(f"no answer from {self.url} within {self.timeout_s} s ({e})") from None
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(f"{self.url} sent no choices[0].message.content: {str(data)[:200]}") from None

    def _rewrite(self, prompts: list[str]) -> list[str | BaseException]:
        outs: list[str | BaseException] = []
        for p in prompts:
            try:
                outs.append(self._request(p))
            except Exception as e:
                outs.append(e)
        return outs


# ---------------------------------------------------------------------------------------------- loading
def bundled_expander_path() -> Path:
    """Where the bundled shapes model keeps its expander (may not exist)."""
    return Path(str(resources.files("pixlm") / "assets" / BUNDLED_EXPANDER[0] / BUNDLED_EXPANDER[1]))


def load_expander_dir(directory: str | os.PathLike, validate: bool | None = None) -> Expander:
    """A built-in or Hugging Face expander from a folder (e.g. a model folder's ``expander/``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"expander folder {str(directory)!r} does not exist")
    config = read_json(directory / "config.json")
    if config.get("kind") == "expander_lm":
        return BuiltinExpander.from_pretrained(directory, validate=True if validate is None else validate)
    if "model_type" in config:
        return HFExpander(directory, validate=bool(validate))
    raise CheckpointError(f"{directory}/config.json is neither a built-in expander (kind 'expander_lm') nor a "
                          "Hugging Face model (model_type)")


def make_expander(backend: str = "builtin", model: str | None = None, base_url: str | None = None,
                  api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 10.0,
                  validate: bool | None = None) -> Expander:
    """An expander by backend name: ``builtin`` (``model`` = folder, default the bundled one), ``hf`` (``model`` =
    a local folder) or ``openai`` (``model`` = the server's model name, ``base_url`` its /v1 URL)."""
    if backend == "builtin":
        path = Path(model) if model else bundled_expander_path()
        if not path.is_dir():
            raise CheckpointError(f"no built-in expander at {path}; train one with `python -m pixlm.train.expander"
                                  " --out runs/expander` and pass --model runs/expander/model")
        return BuiltinExpander.from_pretrained(path, validate=True if validate is None else validate)
    if backend == "hf":
        if not model:
            raise ValueError("the hf backend needs model=<a local Hugging Face causal-LM folder>")
        return HFExpander(model, timeout_s=timeout_s, validate=bool(validate))
    if backend == "openai":
        if not model:
            raise ValueError("the openai backend needs model=<the server's model name>")
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "http://localhost:8080/v1"
        return OpenAIExpander(url, model, api_key_env=api_key_env, timeout_s=timeout_s, validate=bool(validate))
    raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")


def save_expander(expander: Expander | Path, directory: Path) -> None:
    """Write ``expander`` (or copy an expander folder) to ``directory``; used by ``save_pretrained``."""
    if isinstance(expander, Path):
        shutil.copytree(expander, directory)
    else:
        expander.save_pretrained(directory)


__all__ = ["Expander", "BuiltinExpander", "HFExpander", "OpenAIExpander", "ExpansionWarning", "make_expander",
           "load_expander_dir", "bundled_expander_path", "BACKENDS", "INSTRUCTIONS", "DEFAULT_TEMPLATE"]
