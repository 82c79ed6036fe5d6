"""ONNX export and an ONNX Runtime backend for the masked text-to-image pipeline.

``export_onnx(pipe, out)`` writes the text encoder, the generator and the VQ as ONNX graphs, each with a dynamic
batch axis, with the opset of the installed ``torch.onnx`` exporter::

    onnx_index.json            sampler settings (the model's ``defaults``), opset, generator kind
    text_encoder/model.onnx    (ids, mask) → per-token states              + config.json
    generator/hidden.onnx      one generator step: (tokens, text, text_mask) → final hidden states  + config.json
    generator/head.onnx        hidden states → logits (guidance mixes hidden states before the head)
    vq/decoder.onnx            tokens (B, h, w) → images (B, 3, H, W)     + config.json
    vq/encoder.onnx            images → tokens (editing, captioning, previews)
    retrieval/                 the model's retrieval index, when it has one (``pixlm.pipelines.retrieval``)

The runtime side wraps ``onnxruntime`` sessions as components that quack like the torch ones (``config``,
``kind``, ``prepare_text``, ``hidden``, ``head_logits``, ``decode``/``encode``) and return torch tensors, so the same
sampler (``pixlm.sampling.maskgit``) runs them; ``pixlm.load_pipeline(DIR, backend="onnxruntime")`` composes them.
Needs ``pip install 'pixlm[onnx]'`` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pixlm.checkpoint import CheckpointError, atomic_write_dir, load_config, read_json, write_json
from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.models.vq import VQConfig

INDEX = "onnx_index.json"
FORMAT = "pixlm-onnx/1"


# ---------------------------------------------------------------------------------------------- export
class _GeneratorHidden(nn.Module):
    """The generator's ``hidden`` with the text passed as states + mask (what ``prepare_text`` hands the ONNX side)."""

    def __init__(self, generator: MaskedTransformer) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, tokens: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.generator.hidden(tokens, text, text_mask)  # (B, N, C)


class _Call(nn.Module):
    """``module.<method>`` as a module's forward, for the exporter."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module, self.method = module, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.module, self.method)(x)


def _export(module: nn.Module, args: tuple, path: Path, names: list[str], output: str,
            dynamic: dict[str, dict[int, str]]) -> int:
    """Export ``module`` to ``path`` (weights inside the file); returns the graph's ONNX opset."""
    labels = {label for axes in dynamic.values() for label in axes.values()}
    dim = {label: torch.export.Dim(label) for label in labels}  # one Dim per label: same label, same size
    dims = tuple({axis: dim[label] for axis, label in dynamic.get(name, {}).items()} for name in names)
    with warnings.catch_warnings():  # the exporter's notes on renamed axes and deprecations are not the user's concern
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module.eval(), args, path, input_names=names, output_names=[output],
                                        dynamic_shapes=dims, dynamo=True, external_data=False, verbose=False)
        except Exception as e:  # the exporter's own message runs to pages; its first line says what failed
            raise ValueError(f"torch.onnx could not export {path.parent.name}/{path.name}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Export the plain float32 "
                             f"modules: load_pipeline(..., precision='reference'), not an optimized pipeline") from e
    return next(op.version for op in program.model_proto.opset_import if op.domain in ("", "ai.onnx"))


def _tokenize(text_encoder: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) exactly as ``TextEncoder`` feeds its network."""
    if text_encoder.tokenizer is None:
        return text_encoder.model.tokenize(prompts)
    return text_encoder.tokenizer(prompts)


def _write_config(folder: Path, config: Any, kind: str) -> None:
    folder.mkdir()
    write_json(folder / "config.json", {"kind": kind, **dataclasses.asdict(config)})


def export_onnx(pipe: Any, out: str | os.PathLike) -> Path:
    """Write ``pipe``'s text encoder, one generator step (hidden states and head) and the VQ decoder (and
    encoder) as ONNX graphs.

    ``pipe`` is a ``TextToImagePipeline`` with a masked generator in plain float32, as
    ``load_pipeline(..., precision="reference")`` returns it (the exporter traces the plain modules, not the
    optimized swaps). The folder is written atomically; ``out`` must be new, empty or an earlier export.
    """
    gen, vq, text = pipe.generator, pipe.vq, pipe.text_encoder
    if not isinstance(gen, MaskedTransformer):
        raise ValueError(f"ONNX export supports the plain masked generator (MaskedTransformer); this pipeline's is "
                         f"{type(gen).__name__} (kind {getattr(gen, 'kind', '?')!r})")
    target = Path(out)
    if target.exists() and any(target.iterdir()) and not (target / INDEX).is_file():
        raise ValueError(f"out={str(target)!r} is a non-empty folder that holds no ONNX export ({INDEX}); "
                         f"choose a new or empty folder (an earlier export is replaced)")
    c, size = gen.config, vq.config.image_size
    ids, mask = _tokenize(text, ["a red circle above a blue square", "two"])  # example inputs, batch 2
    with torch.no_grad():
        states = text.model(ids, mask)  # (2, T, D)
    tokens = torch.randint(0, c.vocab_size + 1, (2, c.num_tokens))
    grids = torch.randint(0, vq.vocab_size, (2, vq.config.grid, vq.config.grid))
    images = torch.rand(2, 3, size, size) * 2 - 1

    def write(tmp: Path) -> None:
        opsets = []
        with torch.no_grad():
            _write_config(tmp / "text_encoder", text.config, "text_encoder")
            opsets.append(_export(text.model, (ids, mask), tmp / "text_encoder" / "model.onnx", ["ids", "mask"],
                                  "states", {"ids": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}}))
            _write_config(tmp / "generator", c, gen.kind)
            opsets.append(_export(_GeneratorHidden(gen), (tokens, states, mask), tmp / "generator" / "hidden.onnx",
                                  ["tokens", "text", "text_mask"], "hidden",
                                  {"tokens": {0: "batch"}, "text": {0: "batch", 1: "length"},
                                   "text_mask": {0: "batch", 1: "length"}}))
            opsets.append(_export(_Call(gen, "head_logits"), (torch.randn(2, c.num_tokens, c.dim),),
                                  tmp / "generator" / "head.onnx", ["hidden"], "logits", {"hidden": {0: "batch"}}))
            _write_config(tmp / "vq", vq.config, "vq")
            opsets.append(_export(_Call(vq, "decode"), (grids,), tmp / "vq" / "decoder.onnx", ["tokens"], "images",
                                  {"tokens": {0: "batch"}}))
            opsets.append(_export(_Call(vq, "encode"), (images,), tmp / "vq" / "encoder.onnx", ["images"], "tokens",
                                  {"images": {0: "batch"}}))
        if getattr(pipe, "retrieval", None) is not None:  # the training pictures it redraws from (not a network)
            pipe.retrieval.save_pretrained(tmp / "retrieval")
        write_json(tmp / INDEX, {"format": FORMAT, "pipeline": "TextToImagePipeline", "generator": gen.kind,
                                 "defaults": pipe.defaults, "opset": max(opsets),
                                 "exporter": f"torch {torch.__version__}"})

    return atomic_write_dir(out, write)


# ---------------------------------------------------------------------------------------------- runtime
class OnnxSession:
    """An ``onnxruntime`` CPU session called with torch tensors (by input name) and returning a torch tensor."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("the ONNX Runtime backend needs `pip install 'pixlm[onnx]'`") from e
        if not Path(path).is_file():
            raise CheckpointError(f"missing ONNX graph {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()  # as many threads as the torch path
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: inputs[name].detach().cpu().numpy() for name in self.inputs}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class OnnxTextModel:
    """The text encoder's network as an ONNX graph, called like the torch module it replaces inside a
    ``TextEncoder`` (``model(ids, mask)`` → states); tokenization and the prompt cache stay the encoder's own."""

    def __init__(self, session: OnnxSession, replaces: Any) -> None:
        self.session = session
        self.config = getattr(replaces, "config", None)  # TextEncoder.dim reads the hidden size from here
        if hasattr(replaces, "tokenize"):  # the tiny encoder tokenizes in its module (word hashes: no weights)
            self.tokenize = replaces.tokenize

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.session(ids=ids, mask=mask)  # (B, T, D)


class OnnxGenerator:
    """The masked generator as two ONNX graphs (``hidden``: tokens + text → final hidden states; ``head_logits``:
    those → logits), with the torch generator's interface, so ``MaskGITSampler`` runs it unchanged."""

    kind = "masked"

    def __init__(self, hidden: OnnxSession, head: OnnxSession, config: MaskedConfig) -> None:
        self.hidden_session, self.head_session, self.config = hidden, head, config

    @property
    def pos_emb(self) -> torch.Tensor:  # the sampler reads the device from here; ONNX Runtime answers on the CPU
        return torch.empty(0)

    def eval(self) -> OnnxGenerator:
        return self

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        """The graph projects the text itself, so the prepared text is the states and mask as they are."""
        return {"states": text, "mask": text_mask}

    def hidden(self, tokens: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
               prepared: dict | None = None) -> torch.Tensor:
        """tokens (B, N) with ``mask_id`` at masked places → final hidden states (B, N, C)."""
        if prepared is not None:
            text, text_mask = prepared["states"], prepared["mask"]
        if text is None or text_mask is None:
            raise ValueError("OnnxGenerator needs text and text_mask, or prepared= from prepare_text")
        return self.hidden_session(tokens=tokens, text=text, text_mask=text_mask)

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, N, C) → logits (B, N, vocab_size)."""
        return self.head_session(hidden=h.float())

    def forward(self, tokens: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                prepared: dict | None = None) -> torch.Tensor:
        """tokens (B, N) → logits (B, N, vocab_size)."""
        return self.head_logits(self.hidden(tokens, text, text_mask, prepared))

    __call__ = forward


class OnnxVQ:
    """The VQ decoder and encoder as ONNX graphs: ``decode`` tokens (B, h, w) → images in [-1, 1], ``encode`` back."""

    kind = "vq"

    def __init__(self, decoder: OnnxSession, encoder: OnnxSession, config: VQConfig) -> None:
        self.decoder, self.encoder, self.config = decoder, encoder, config

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def eval(self) -> OnnxVQ:
        return self

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens=tokens.long())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images=images.float())


@dataclass
class OnnxComponents:
    """What ``load_onnx_components`` reads; ``text_model`` goes inside a ``TextEncoder`` built from
    ``text_encoder_dir`` (the pipelines layer does that: ``pixlm.pipelines.text_to_image.load_pipeline``)."""

    vq: OnnxVQ
    generator: OnnxGenerator
    text_model: OnnxSession
    text_encoder_dir: Path
    defaults: dict


def read_onnx_index(path: str | os.PathLike) -> dict:
    """``onnx_index.json`` of an export folder, checked."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"ONNX model folder {str(root)!r} does not exist")
    index = read_json(root / INDEX)
    if index.get("format") != FORMAT:
        raise CheckpointError(f"{root / INDEX} has format {index.get('format')!r}; this pixlm reads {FORMAT!r}")
    if index.get("generator") != "masked":
        raise CheckpointError(f"{root / INDEX} names generator {index.get('generator')!r}; only 'masked' is exported")
    return index


def load_onnx_components(path: str | os.PathLike, threads: int | None = None) -> OnnxComponents:
    """ONNX Runtime sessions for an ``export_onnx`` folder, wrapped as pipeline components."""
    root = Path(path)
    index = read_onnx_index(root)
    vq_config = load_config(root / "vq", VQConfig, "vq")
    vq = OnnxVQ(OnnxSession(root / "vq" / "decoder.onnx", threads), OnnxSession(root / "vq" / "encoder.onnx", threads),
                vq_config)
    generator = OnnxGenerator(OnnxSession(root / "generator" / "hidden.onnx", threads),
                              OnnxSession(root / "generator" / "head.onnx", threads),
                              load_config(root / "generator", MaskedConfig, "masked"))
    text_model = OnnxSession(root / "text_encoder" / "model.onnx", threads)
    return OnnxComponents(vq, generator, text_model, root / "text_encoder", index.get("defaults") or {})


__all__ = ["export_onnx", "load_onnx_components", "read_onnx_index", "OnnxComponents", "OnnxGenerator",
           "OnnxSession", "OnnxTextModel", "OnnxVQ"]
