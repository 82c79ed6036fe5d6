"""Pipelines: components composed behind one call. ``common`` (outputs, checks, seeds, image ↔ tokens, bundled
models) sits below ``text_to_image`` (generation, captioning), ``editing`` (inpaint, outpaint, variation, instruct)
and ``rerank`` (best-of-N); none of them imports a pipeline module above it."""
