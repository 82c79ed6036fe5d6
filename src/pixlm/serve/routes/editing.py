"""Picture in: inpainting (OpenAI's create-image-edit), variations, and captions when the model has a captioner."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from pixlm.pipelines.editing import edit_image, repaint_grid, vary_image
from pixlm.serve.batcher import Job
from pixlm.serve.bodies import form_model, read_form, read_image
from pixlm.serve.engine import CallPayload
from pixlm.serve.errors import APIError, bad_request
from pixlm.serve.responses import images_response
from pixlm.serve.schemas import EditRequest, VariationRequest, edit_params, variation_params

router = APIRouter()


async def _checked_upload(request: Request, file_fields: tuple[str, ...], schema, to_params):
    """(engine, checked parameters, file bytes) of an edit or variation request."""
    state = request.app.state
    state.engine.check_editable()
    fields, files = await read_form(request, file_fields, state.limits)
    return state.engine, to_params(form_model(schema, fields, state.limits), state.limits), files


async def _images(request: Request, engine, params, fn, endpoint: str) -> dict:
    """Run ``fn`` (an editing call) as a job of its own and answer with its pictures."""
    out = await engine.run(request, Job(CallPayload(fn), rows=params.n))
    return await images_response(request, out.images, out.prompts, params, endpoint)


@router.post("/v1/images/edits")
async def edits(request: Request) -> dict:
    """Inpainting: transparent pixels of ``mask`` (or of ``image``) are redrawn."""
    engine, params, files = await _checked_upload(request, ("image", "mask"), EditRequest, edit_params)
    limits, pipe = request.app.state.limits, engine.pipeline
    image = await read_image(files, "image", limits)
    mask = await read_image(files, "mask", limits, required=False)
    try:  # check the mask now, so a bad one is a 400 before queueing
        await asyncio.to_thread(repaint_grid, image, mask, pipe.generator.config.grid, True)
    except ValueError as e:
        raise bad_request(str(e), "mask" if mask is not None else "image", "invalid_mask") from None
    return await _images(request, engine, params, lambda: edit_image(
        pipe, image, params.prompt, mask, num_images=params.n, num_inference_steps=params.steps,
        guidance_scale=params.guidance_scale, negative_prompt=params.negative_prompt, seed=params.seed),
        "/v1/images/edits")


@router.post("/v1/images/variations")
async def variations(request: Request) -> dict:
    """Variations of an uploaded picture; extras: strength, prompt, seed, steps, guidance_scale."""
    engine, params, files = await _checked_upload(request, ("image",), VariationRequest, variation_params)
    image = await read_image(files, "image", request.app.state.limits)
    strength = {} if params.strength is None else {"strength": params.strength}
    return await _images(request, engine, params, lambda: vary_image(
        engine.pipeline, image, num_images=params.n, prompt=params.prompt, num_inference_steps=params.steps,
        guidance_scale=params.guidance_scale, seed=params.seed, **strength), "/v1/images/variations")


@router.post("/v1/captions")
async def captions(request: Request) -> dict:
    """Image → text when the pipeline has a captioner (``pipeline.caption(image)`` → str or [str])."""
    state = request.app.state
    engine, limits = state.engine, state.limits
    caption = getattr(engine.pipeline, "caption", None)
    has = getattr(engine.pipeline, "has_captioner", None)
    if not callable(caption) or (callable(has) and not has()):
        raise APIError(501, "captioning is not available: this model has no captioner", code="not_implemented")
    fields, files = await read_form(request, ("image",), limits)
    unknown = sorted(set(fields) - {"model", "user"})
    if unknown:
        raise bad_request(f"unknown parameter {unknown[0]!r}; allowed: image, model, user", unknown[0],
                          "unknown_parameter")
    image = await read_image(files, "image", limits)
    text = await engine.run(request, Job(CallPayload(lambda: caption(image)), rows=1))
    if isinstance(text, (list, tuple)):
        text = text[0]
    return {"text": str(text)}
