"""Build a model folder's retrieval index from its training data (``pixlm.pipelines.retrieval``).

    python -m pixlm.train.retrieval --model runs/emoji/pipeline --data runs/emoji/data/train --group-field style

Every distinct picture of the imagefolder ``--data`` is tokenized by the model's own tokenizer; its captions are
embedded by the model's text encoder (mean-pooled, normalised) and averaged into one unit vector, so a picture is
found by any of the ways its captions phrase it (name, keywords). ``--group-field`` names a metadata column (the
emoji world's ``style``) that a prompt selects with "<value> style"; that phrase is left out of the embeddings.
The index is written to ``MODEL/retrieval/`` and the sampling settings to ``model_index.json``
``defaults.retrieval``; running it again rebuilds both (deterministic: the same data gives the same files).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from pixlm.checkpoint import CheckpointError, read_json, write_json
from pixlm.data.folder import METADATA, ImageFolder
from pixlm.pipelines.retrieval import (RETRIEVAL_DEFAULTS, RetrievalIndex, check_retrieval_settings,
                                       sentence_embeddings, strip_group, text_encoder_id)
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.train.captioner import encode_folder


def build_index(pipe: TextToImagePipeline, data: str | Path, group_field: str = "", batch: int = 256,
                progress: bool = True) -> RetrievalIndex:
    """The index of ``data``'s pictures for ``pipe`` (its tokenizer and text encoder)."""
    data = Path(data)
    tokens, captions = encode_folder(pipe.vq, data, batch, "tokenizing pictures" if progress else None)
    groups: list[str] = [""] * len(captions)
    if group_field:
        by_file: dict[str, str] = {}
        with open(data / METADATA, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    row = json.loads(line)
                    if group_field not in row:
                        raise ValueError(f"{data / METADATA}:{n}: no {group_field!r} field (--group-field)")
                    by_file.setdefault(row["file_name"], str(row[group_field]).lower())
        folder = ImageFolder(data)
        names = [folder.rows[g[0]].file_name for g in folder.pictures()]
        groups = [by_file[n] for n in names]
    group_names = {g for g in groups if g}
    # a group is chosen by naming it ("…, noto style"), not by meaning: its phrase is left out of the embedding, so
    # the same emoji in every style embeds alike and a prompt that names no style draws the styles about equally
    texts = [list(dict.fromkeys(strip_group(c, group_names) for c in caps)) for caps in captions]
    unique = list(dict.fromkeys(t for ts in texts for t in ts))
    row = {t: i for i, t in enumerate(unique)}
    per_text = sentence_embeddings(pipe.text_encoder, unique, batch,
                                   progress="embedding captions" if progress else None)
    owner = torch.tensor([i for i, ts in enumerate(texts) for _ in ts])
    pooled = torch.zeros(len(captions), per_text.shape[1]).index_add_(
        0, owner, per_text[torch.tensor([row[t] for ts in texts for t in ts])])
    labels = [min(caps, key=len) for caps in captions]  # the plainest wording, for reports
    return RetrievalIndex(tokens, pooled, labels, groups, text_encoder_id(pipe.text_encoder))


def attach_index(model: str | Path, data: str | Path, group_field: str = "", settings: dict | None = None,
                 threads: int = 0) -> Path:
    """Build the index of ``data`` for the model folder ``model`` and write it there (``retrieval/`` and
    ``defaults.retrieval``). Returns the index folder."""
    model = Path(model)
    if not (model / "model_index.json").is_file():
        raise CheckpointError(f"{model} is not a model folder (no model_index.json)")
    cfg = check_retrieval_settings(settings or {})
    if threads:
        torch.set_num_threads(threads)
    pipe = TextToImagePipeline.from_pretrained(model)
    pipe.retrieval = None
    index = build_index(pipe, data, group_field)
    pipe.attach_retrieval(index)  # checks it fits the generator and the text encoder
    out = index.save_pretrained(model / "retrieval")
    meta = read_json(model / "model_index.json")
    meta.setdefault("defaults", {})["retrieval"] = cfg
    write_json(model / "model_index.json", meta)
    notice = model / "ATTRIBUTION.md"
    if notice.is_file() and RETRIEVAL_NOTICE not in notice.read_text(encoding="utf-8"):
        with open(notice, "a", encoding="utf-8") as f:  # the pictures themselves now ship: say so
            f.write("\n" + RETRIEVAL_NOTICE + "\n")
    return out


RETRIEVAL_NOTICE = ("`retrieval/` holds every training picture of this data as the model's VQ tokens (and embeddings "
                    "of their captions); they are derived from the pictures above and carry the same licences.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model folder (masked generator); the index is written into it")
    ap.add_argument("--data", required=True, help="the imagefolder it was trained on (metadata.jsonl + pictures)")
    ap.add_argument("--group-field", default="", help="a metadata column prompts select with '<value> style'")
    for key, value in RETRIEVAL_DEFAULTS.items():
        ap.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    settings = {k: getattr(a, k) for k in RETRIEVAL_DEFAULTS}
    print(attach_index(a.model, a.data, a.group_field, settings, a.threads))


if __name__ == "__main__":
    main()
