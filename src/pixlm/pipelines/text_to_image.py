"""Pipelines: the text encoder, a token generator and the VQ decoder composed behind one call.

A model folder holds ``model_index.json`` plus one subfolder per component, each ``config.json`` +
``model.safetensors``::

    model_index.json   {"pipeline": "TextToImagePipeline", "generator": "masked", "defaults": {...}}
    vq/  text_encoder/  generator/
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from pixlm.checkpoint import CheckpointError, atomic_write_dir, read_json, write_json
from pixlm.pipelines.retrieval import RetrievalIndex, sentence_embeddings, text_encoder_id
from pixlm.pipelines.common import (
    MODEL_NAMES,
    PipelineOutput,
    PreviewCallback,
    bundled_model_path,
    check_number,
    check_prompts,
    encode_images,
    check_sampling_args,
    component_finder,
    make_generator,
    make_generators,
    model_folder,
    tokens_to_images,
)
from pixlm.models.autoregressive import AutoregressiveTransformer
from pixlm.models.diffusion import LatentDiffusion
from pixlm.models.gan import GANGenerator
from pixlm.models.masked import MaskedTransformer
from pixlm.models.vae import ConditionalVAE
from pixlm.models.vq import VQModel
from pixlm.sampling.cfg import map_tensors
from pixlm.sampling.registry import make_sampler
from pixlm.text.encoder import TextEncoder

if TYPE_CHECKING:
    from pixlm.models.captioner import Captioner
    from pixlm.text.expander import Expander

# model_index.json "generator" → network class; ``sampling.registry.make_sampler`` picks the matching sampler.
GENERATORS = {"masked": MaskedTransformer, "autoregressive": AutoregressiveTransformer, "gan": GANGenerator,
              "vae": ConditionalVAE, "diffusion": LatentDiffusion}
class TextToImagePipeline:
    """prompt → text states → generator tokens → VQ decoder → images."""

    def __init__(self, vq: VQModel, text_encoder: TextEncoder, generator: MaskedTransformer,
                 defaults: dict | None = None, device: str = "cpu") -> None:
        self.vq = vq.eval()
        self.text_encoder = text_encoder
        self.generator = generator.eval()
        self.defaults = {"num_inference_steps": 8, "guidance_scale": 3.0, "temperature": 1.0,
                         "choice_temperature": 4.5, "revise_margin": None, **(defaults or {})}
        self.device = torch.device(device)
        self.expander = None  # a pixlm.text.expander.Expander, loaded lazily from expander_path by expand=True
        self.expander_path: Path | None = None
        self.captioner = None  # a pixlm.models.captioner.Captioner, loaded lazily from captioner_path by caption()
        self.captioner_path: Path | None = None
        self.retrieval: RetrievalIndex | None = None  # training pictures to redraw from (``pipelines.retrieval``)
        self.teacher_path: Path | None = None  # a distilled student's ``teacher/`` variant: edits draw with it
        self._editing: TextToImagePipeline | None = None
        if generator.config.vocab_size != vq.vocab_size:
            raise CheckpointError(f"generator vocab {generator.config.vocab_size} != tokenizer vocab {vq.vocab_size}")
        if generator.config.text_dim != text_encoder.dim:
            raise CheckpointError(f"generator expects text_dim {generator.config.text_dim}, "
                                  f"text encoder gives {text_encoder.dim}")

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str = "cpu") -> "TextToImagePipeline":
        root = bundled_model_path() if path is None else Path(path)
        if not root.is_dir():
            raise CheckpointError(f"model folder {str(root)!r} does not exist")
        index = read_json(root / "model_index.json")
        kind = index.get("generator")
        if kind not in GENERATORS:
            raise CheckpointError(f"{root}/model_index.json names generator {kind!r}; known: {sorted(GENERATORS)}")
        part = component_finder(root, index)
        vq = VQModel.from_pretrained(part("vq"), map_location=device)
        text = TextEncoder.from_pretrained(part("text_encoder"), device=device)
        gen = GENERATORS[kind].from_pretrained(root / "generator", map_location=device)
        pipe = cls(vq, text, gen, index.get("defaults"), device=device)
        pipe.expander_path = part("expander") if part("expander").is_dir() else None
        pipe.captioner_path = part("captioner") if part("captioner").is_dir() else None
        if part("retrieval").is_dir():
            pipe.attach_retrieval(RetrievalIndex.from_pretrained(part("retrieval")))
        if "distilled_steps" in pipe.defaults and (root / "teacher" / "model_index.json").is_file():
            pipe.teacher_path = root / "teacher"
        return pipe

    def editing_pipeline(self) -> "TextToImagePipeline":
        """The pipeline edits (``pixlm.pipelines.editing``) draw with: this one, or for a distilled student whose
        folder keeps its teacher (``teacher/``), that teacher at its own steps and guidance. A student is trained on
        the teacher's text-to-image paths only, and on outpainting it fell short of the teacher (43/50 against
        48/50 on ``benchmarks/fill_edits.py --seed 4242``). The teacher shares this pipeline's tokenizer, text
        encoder, captioner and index; its generator loads on first use, at this pipeline's precision."""
        if self.teacher_path is None:
            return self
        if self._editing is None:
            index = read_json(self.teacher_path / "model_index.json")
            gen = GENERATORS[index["generator"]].from_pretrained(self.teacher_path / "generator",
                                                                 map_location=str(self.device))
            pipe = self.with_generator(gen, index.get("defaults"))
            settings = getattr(self, "inference_settings", None)
            if settings is not None:
                from pixlm.inference import optimize_generator

                optimize_generator(gen, settings["precision"], compile=settings["compile"])
                pipe.inference_settings = settings
            self._editing = pipe
        return self._editing

    def with_generator(self, generator: torch.nn.Module, defaults: dict | None) -> "TextToImagePipeline":
        """A pipeline with another generator and sampling defaults that shares every other part of this one: the
        tokenizer, the text encoder (and its prompt cache), the expander, the captioner and the retrieval index."""
        pipe = TextToImagePipeline(self.vq, self.text_encoder, generator, defaults, device=str(self.device))
        pipe.expander, pipe.expander_path = self.expander, self.expander_path
        pipe.captioner, pipe.captioner_path = self.captioner, self.captioner_path
        pipe.attach_retrieval(self.retrieval)
        return pipe

    def attach_retrieval(self, index: RetrievalIndex | None) -> None:
        """Draw from ``index`` by default (see ``pixlm.pipelines.retrieval``); None detaches it. The index must
        hold this generator's tokens and embeddings of this text encoder."""
        if index is not None:
            if self.generator.kind != "masked":
                raise CheckpointError(f"a retrieval index redraws pictures with a masked generator; this one is "
                                      f"{self.generator.kind!r}")
            if index.tokens.shape[1] != self.generator.config.num_tokens:
                raise CheckpointError(f"the retrieval index holds {index.tokens.shape[1]} tokens per picture; the "
                                      f"generator draws {self.generator.config.num_tokens}")
            if index.embeddings.shape[1] != self.text_encoder.dim or \
                    (index.text_encoder_id and index.text_encoder_id != text_encoder_id(self.text_encoder)):
                raise CheckpointError(f"the retrieval index was embedded by text encoder {index.text_encoder_id!r} "
                                      f"({index.embeddings.shape[1]} dims); this pipeline has "
                                      f"{text_encoder_id(self.text_encoder)!r} ({self.text_encoder.dim} dims)")
        self.retrieval = index

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        def write(tmp: Path) -> None:
            self.vq.save_pretrained(tmp / "vq")
            self.text_encoder.save_pretrained(tmp / "text_encoder")
            self.generator.save_pretrained(tmp / "generator")
            if self.expander is not None or self.expander_path is not None:
                from pixlm.text.expander import save_expander

                save_expander(self.expander or self.expander_path, tmp / "expander")
            if self.captioner is not None or self.captioner_path is not None:
                self.get_captioner().save_pretrained(tmp / "captioner")
            if self.retrieval is not None:
                self.retrieval.save_pretrained(tmp / "retrieval")
            write_json(tmp / "model_index.json", {"pipeline": type(self).__name__, "generator": self.generator.kind,
                                                  "defaults": self.defaults})

        return atomic_write_dir(path, write)

    # ------------------------------------------------------------------ generation
    def encode_prompts(self, prompts: list[str]) -> dict:
        states, mask = self.text_encoder.encode(prompts)
        return self.generator.prepare_text(states.to(self.device), mask.to(self.device))

    def sampling_settings(self, num_images: int, steps: int | None, scale: float | None,
                          images_name: str = "num_images_per_prompt") -> tuple[int, float]:
        """(steps, guidance scale) with the model's defaults filled in; out-of-range values are errors."""
        steps = self.defaults["num_inference_steps"] if steps is None else steps
        scale = self.defaults["guidance_scale"] if scale is None else scale
        check_sampling_args(num_images, steps, scale, images_name)
        distilled = self.defaults.get("distilled_steps")  # a student of pixlm.train.distill draws in that many only
        if distilled is not None and steps != distilled:
            raise ValueError(f"num_inference_steps={steps}: this model was distilled to draw in {distilled} steps "
                             f"(model_index.json defaults.distilled_steps); use {distilled}, or its teacher for "
                             "other step counts (the folder's teacher/ variant: --model shapes-teacher or "
                             "emoji-teacher for the bundled models)")
        return steps, scale

    def text_conditioning(self, rows: list[str], negatives: list[str] | None,
                          scale: float) -> tuple[dict, dict | None]:
        """``prepare_text`` results for the conditional rows and (when guidance is on) the unconditional rows: the
        negative prompts, or the empty prompt. Each distinct text is encoded and prepared once, then its rows
        are repeated (``prepare_text`` works row by row)."""
        uncond_rows = (negatives or [""] * len(rows)) if scale != 1.0 else []  # guidance off: no unconditional row
        uniq = list(dict.fromkeys(rows + uncond_rows))
        states, mask = self.text_encoder.encode(uniq)
        pos = {p: i for i, p in enumerate(uniq)}
        every = self.generator.prepare_text(states.to(self.device), mask.to(self.device))

        def prepared(texts: list[str]) -> dict:
            idx = torch.tensor([pos[t] for t in texts], device=self.device)
            return map_tensors(lambda t: t.index_select(0, idx), every)

        uncond = prepared(uncond_rows) if scale != 1.0 else None
        return prepared(rows), uncond

    def generate(self, prompt: str | list[str], num_images_per_prompt: int = 1,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 negative_prompt: str | list[str] | None = None, seed: int | list[int] | None = None,
                 callback: PreviewCallback | None = None, temperature: float | None = None,
                 expand: "bool | Expander | None" = None, retrieve: bool | None = None) -> PipelineOutput:
        """Like ``__call__`` but returns tokens and timings too.

        Images come prompt by prompt, ``num_images_per_prompt`` each. ``seed=s`` gives image ``i`` the picture that
        a one-image call with seed ``s + i`` draws; a list gives one seed per image.

        ``expand`` rewrites the prompts first (see :meth:`read_prompts`): None (the default) reads freely worded
        prompts into the caption grammar for models whose pictures have one (``defaults.scene_grammar``), True
        uses the model folder's ``expander/`` for every prompt, an ``Expander`` that one, False nothing. The prompt
        each image was drawn from is in ``prompts``; when any was rewritten, ``revised_prompts`` has them too.

        ``retrieve``: on a model with a retrieval index (``retrieval/``), None or True redraws part of a training
        picture the prompt retrieves, drawn from each image's seed (``pixlm.pipelines.retrieval``); False draws from
        the prompt alone. True on a model without an index is an error.
        """
        prompts = check_prompts(prompt)
        steps, scale = self.sampling_settings(num_images_per_prompt, num_inference_steps, guidance_scale)
        temp = self.defaults["temperature"] if temperature is None else temperature
        check_number(temp, "temperature", 0.0, 10.0, integer=False)
        negatives = None
        if negative_prompt is not None:
            negatives = check_prompts(negative_prompt, "negative_prompt")
            if len(negatives) == 1:
                negatives = negatives * len(prompts)
            if len(negatives) != len(prompts):
                raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        if retrieve not in (None, True, False):
            raise ValueError(f"retrieve={retrieve!r} must be True, False or None")
        if retrieve and self.retrieval is None:
            raise ValueError("retrieve=True but this model has no retrieval/ index (see pixlm.train.retrieval)")
        rows = [p for p in prompts for _ in range(num_images_per_prompt)]
        gens, seeds = make_generators(seed, len(rows), self.device)
        t_expand = time.perf_counter()
        rows, revised = self.read_prompts(rows, seeds, expand)
        expand_ms = (time.perf_counter() - t_expand) * 1e3
        t0 = time.perf_counter()
        with torch.inference_mode():
            neg_rows = [n for n in negatives for _ in range(num_images_per_prompt)] if negatives else None
            cond, uncond = self.text_conditioning(rows, neg_rows, scale)
            init = keep = None
            if self.retrieval is not None and retrieve is not False:
                def embed(texts: list[str]) -> torch.Tensor:  # the prompts' states are cached just now
                    return sentence_embeddings(self.text_encoder, texts, use_cache=True)

                init, keep, _ = self.retrieval.pick(rows, embed, seeds, self.defaults.get("retrieval", {}))
                init, keep = init.to(self.device), keep.to(self.device)
            t1 = time.perf_counter()
            sampler = make_sampler(self.generator.kind, steps, scale, temp, self.defaults)
            try:
                start = {} if init is None else {"init_tokens": init, "keep": keep}  # masked samplers only
                tokens = sampler.sample(self.generator, cond, uncond, len(rows), generator=gens, callback=callback,
                                        **start)
            except RuntimeError as e:
                if "probability tensor" in str(e):
                    raise FloatingPointError("the generator produced NaN/Inf logits; the weights are corrupt") from e
                raise
            t2 = time.perf_counter()
            g = self.generator.config.grid
            tokens = tokens.view(len(rows), g, g)
            images = tokens_to_images(self.vq, tokens)
        t3 = time.perf_counter()
        timings = {"text_ms": (t1 - t0) * 1e3, "sample_ms": (t2 - t1) * 1e3, "decode_ms": (t3 - t2) * 1e3}
        if revised or expand:
            timings["expand_ms"] = expand_ms
        return PipelineOutput(images, rows, tokens, timings, revised)

    def read_prompts(self, rows: list[str], seeds: list[int], expand: "bool | Expander | None" = None,
                     ) -> tuple[list[str], list[str]]:
        """The prompt each image is drawn from, and the same list when any prompt was rewritten (else ``[]``).

        ``expand=None``: on a model whose ``defaults.scene_grammar`` is ``"shapes"``, each prompt is read by
        ``pixlm.data.free_wording.canonical_prompt`` ("Draw me a big azure box!" → "a large blue square", the
        wording the generator was trained on); a shape the prompt leaves open ("a red thing") is drawn from the
        image's seed, so image ``i`` of seed ``s`` stays the picture of a one-image call with seed ``s + i``. Unless
        ``defaults.plan_layout`` is false, the rewrite also gives every object of a scene of two or more (``"all"``:
        a lone object too) a cell of its own, drawn from the same seed within the prompt's positions and relations
        ("a circle and a square" → "a circle on the left and a square in the bottom right"), so counts and
        relations are drawn as single objects in named cells. Prompts the reader cannot read stay as given
        (``expand=True`` sends them to the expander). Other models keep their prompts. ``expand=True`` or an
        ``Expander`` rewrites every prompt with that expander; False keeps them all."""
        if expand is False:
            return rows, []
        if expand is None:
            if self.defaults.get("scene_grammar") != "shapes":
                return rows, []
            from pixlm.data.free_wording import canonical_prompt
            from pixlm.data.specs import SpecError

            out = list(rows)
            for i, (p, s) in enumerate(zip(rows, seeds)):
                try:
                    out[i] = canonical_prompt(p, random.Random(s), layout=self.defaults.get("plan_layout", True))
                except SpecError:
                    pass  # outside the grammar: the text encoder reads it as given
            return out, (out if out != rows else [])
        expanded = self._expand_unique(rows, expand)
        out = [expanded[p] for p in rows]
        return out, out

    def _expand_unique(self, prompts: list[str], expand: "bool | Expander") -> dict[str, str]:
        unique = list(dict.fromkeys(prompts))
        return dict(zip(unique, self.get_expander(expand).expand_batch(unique)))

    def get_expander(self, expand: "bool | Expander" = True) -> "Expander":
        """The expander ``generate(expand=...)`` uses: the one passed, or this model's (loaded on first use)."""
        from pixlm.text.expander import Expander, load_expander_dir

        if isinstance(expand, Expander):
            return expand
        if expand is not True:
            raise ValueError(f"expand={expand!r} must be True, False or an Expander")
        if self.expander is None:
            if self.expander_path is None:
                raise ValueError("expand=True but this model has no expander/ folder; pass expand=<an Expander> "
                                 "(see pixlm.text.expander.make_expander) or set pipeline.expander")
            self.expander = load_expander_dir(self.expander_path)
        return self.expander

    # ------------------------------------------------------------------ captioning and editing
    def has_captioner(self) -> bool:
        """Whether ``caption`` can run: a captioner is loaded or the model folder has a ``captioner/``."""
        return self.captioner is not None or self.captioner_path is not None

    def get_captioner(self) -> "Captioner":
        """This model's captioner (loaded on first use); ``NoCaptionerError`` when the model has none."""
        from pixlm.models.captioner import Captioner, NoCaptionerError, tokenizer_fingerprint

        if self.captioner is None:
            if self.captioner_path is None:
                raise NoCaptionerError("this model has no captioner/ folder; train one with `python -m "
                                       "pixlm.train.captioner --attach MODEL_DIR` or set pipeline.captioner")
            cap = Captioner.from_pretrained(self.captioner_path, map_location=str(self.device))
            want = cap.config.tokenizer_id
            if want and want != tokenizer_fingerprint(self.vq):
                raise CheckpointError(f"{self.captioner_path} was trained on tokenizer {want}, but this model's vq/ "
                                      f"is {tokenizer_fingerprint(self.vq)}; retrain or re-attach the captioner")
            self.captioner = cap
        return self.captioner

    def caption(self, images: "Image.Image | list[Image.Image]", detailed: bool = False, method: str = "greedy",
                seed: int | None = None, **options) -> list[str]:
        """One caption per picture. ``detailed`` names every object (size, colour, shape, position);
        ``method`` is greedy, beam or sample; ``options`` go to ``sampling.captioning.CaptionSampler``."""
        from pixlm.sampling.captioning import caption_tokens

        cap = self.get_captioner()
        gen = make_generator(seed, self.device)[0] if method == "sample" else None
        with torch.inference_mode():
            return caption_tokens(cap, encode_images(self, images), detailed, method, generator=gen, **options)

    def edit(self, image: Image.Image, prompt: str, mode: str = "inpaint", mask: Image.Image | None = None,
             strength: float | None = None, seed: int | None = None, **options) -> PipelineOutput:
        """Edit a picture: inpaint (mask white = repaint), outpaint, variation or instruct ("make the circle blue").
        See ``pixlm.pipelines.editing.edit``; returns an ``EditOutput`` (a ``PipelineOutput`` with ``repainted`` and ``info``)."""
        from pixlm.pipelines.editing import edit

        return edit(self, image, prompt, mode=mode, mask=mask, strength=strength, seed=seed, **options)

    def __call__(self, prompt: str | list[str], num_images_per_prompt: int = 1, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, negative_prompt: str | list[str] | None = None,
                 seed: int | list[int] | None = None, callback: PreviewCallback | None = None,
                 retrieve: bool | None = None) -> list[Image.Image]:
        """Images in prompt order, then per-prompt order."""
        return self.generate(prompt, num_images_per_prompt, num_inference_steps, guidance_scale, negative_prompt,
                             seed, callback, retrieve=retrieve).images

    def decode_preview(self, tokens: torch.Tensor) -> list[Image.Image]:
        """Decode a partially masked token grid, showing still-masked places as blank canvas (UI previews)."""
        if not hasattr(self, "_blank_token"):
            white = torch.ones(1, 3, self.vq.config.image_size, self.vq.config.image_size)
            self._blank_token = int(self.vq.encode(white)[0, 0, 0])
        t = tokens.clone()
        t[t >= self.vq.vocab_size] = self._blank_token
        g = self.generator.config.grid
        return tokens_to_images(self.vq, t.view(-1, g, g))


BACKENDS = ("torch", "onnxruntime")


def load_pipeline(path: str | os.PathLike | None = None, device: str = "cpu", precision: str = "auto",
                  backend: str = "torch", threads: int | None = None) -> TextToImagePipeline:
    """Load a pipeline from a model folder or a bundled model's name (``shapes``, ``emoji``; ``shapes-teacher``,
    ``emoji-teacher`` for the 8-step models they were distilled from); ``None`` loads the bundled shapes model. A
    name wins over a folder of the same name: write ``./emoji`` for the folder.

    ``precision`` (``pixlm.inference.PRECISIONS``): ``"auto"`` (default) the fastest inference path whose dev-set
    accuracy is within 1 point of float32 on this machine, ``"reference"`` plain float32 (bit-exact comparisons),
    or an explicit ``"fp32"``, ``"bf16"``, ``"int8"``; see ``pixlm.inference.optimize``.

    ``backend="onnxruntime"`` loads a ``pixlm export onnx`` folder instead (``pip install 'pixlm[onnx]'``): the
    networks run as ONNX Runtime sessions (``threads`` intra-op threads each) under the same sampler and checks."""
    from pixlm.inference import PRECISIONS, optimize

    if backend not in BACKENDS:  # before loading anything
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    if backend == "onnxruntime":
        if path is None or (isinstance(path, str) and path in MODEL_NAMES):
            raise ValueError("backend='onnxruntime' loads an exported folder: run `pixlm export onnx --model "
                             f"{path or 'shapes'} --out DIR` first and pass DIR")
        if precision != "auto":
            raise ValueError(f"precision={precision!r} applies to the torch backend; an ONNX export runs in float32")
        return _load_onnx(path, threads)
    return optimize(TextToImagePipeline.from_pretrained(model_folder(path), device=device), precision)


def _load_onnx(path: str | os.PathLike, threads: int | None) -> TextToImagePipeline:
    """The same pipeline with its text encoder network, generator and VQ as ``pixlm.inference.onnx`` sessions."""
    from pixlm.checkpoint import load_config
    from pixlm.inference.onnx import OnnxTextModel, load_onnx_components
    from pixlm.text.encoder import TextEncoderConfig

    parts = load_onnx_components(path, threads)
    text = TextEncoder(load_config(parts.text_encoder_dir, TextEncoderConfig, "text_encoder"))
    text.model = OnnxTextModel(parts.text_model, replaces=text.model)  # tokenizer and prompt cache stay
    pipe = TextToImagePipeline(parts.vq, text, parts.generator, parts.defaults)
    if (Path(path) / "retrieval").is_dir():
        pipe.attach_retrieval(RetrievalIndex.from_pretrained(Path(path) / "retrieval"))
    return pipe


__all__ = ["TextToImagePipeline", "load_pipeline", "GENERATORS", "BACKENDS"]
