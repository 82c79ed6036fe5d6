"""The ``pixlm`` command line.

One small function per command; each imports what it needs inside the function, so ``pixlm --help`` stays
fast. To add a command, write a function under the right Typer app (``app`` for top-level commands such as
``generate``; a sub-app such as ``data_app`` for a family) and keep the work itself in the library.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="pixlm", help="Text → image with discrete image tokens: data, training, generation, "
                  "evaluation.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Make and check datasets and prompt sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report a ValueError (bad input: a malformed file, an out-of-range option) as one line and exit 1."""
    try:
        yield
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


# ---------------------------------------------------------------------------------------------- data
@data_app.command("shapes")
def data_shapes(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of scenes to write.")],
    out: Annotated[Path, typer.Option(help="Output folder (created if missing).")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    size: Annotated[int, typer.Option(min=3, help="Canvas side in pixels.")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Write into a folder that already has metadata.jsonl.")] = False,
) -> None:
    """Write N captioned shapes scenes as an imagefolder: 00000.png… plus metadata.jsonl."""
    from pixlm.data.folder import write_imagefolder
    from pixlm.data.shapes import iter_scenes

    items = ((img, text, scene.to_dicts()) for img, text, scene in iter_scenes(seed, n, size))
    start = time.perf_counter()
    with user_errors():
        count = write_imagefolder(out, items, overwrite=overwrite, digits=max(5, len(str(n - 1))))
    secs = time.perf_counter() - start
    typer.echo(f"wrote {count} images ({size}×{size}) and metadata.jsonl to {out} "
               f"in {secs:.1f} s ({count / max(secs, 1e-9):.0f} scenes/s)")


@data_app.command("specs")
def data_specs(
    out: Annotated[Path, typer.Option(help="Output JSONL file.")],
    n_per_category: Annotated[int, typer.Option(min=1, help="Prompts per category.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a GenEval-like prompt-spec set (the shipped dev set is --n-per-category 50 --seed 0)."""
    from pixlm.data.specs import CATEGORIES, make_dev_set, write_specs

    rows = make_dev_set(seed, n_per_category)
    write_specs(rows, out)
    typer.echo(f"wrote {len(rows)} prompt specs ({n_per_category} × {len(CATEGORIES)} categories) to {out}")


@data_app.command("check")
def data_check(
    folder: Annotated[Path, typer.Argument(help="Folder holding metadata.jsonl and the images.")],
) -> None:
    """Validate an imagefolder: every metadata row and every image; exit 1 naming the first bad row."""
    from collections import Counter

    from pixlm.data.folder import ImageFolder

    with user_errors():
        ds = ImageFolder(folder)
        sizes: Counter[tuple[int, int]] = Counter(ds.load_image(i).size for i in range(len(ds)))
    with_objects = sum(r.objects is not None for r in ds.rows)
    summary = ", ".join(f"{n} at {w}×{h}" for (w, h), n in sizes.most_common(5))
    typer.echo(f"{folder}: {len(ds)} images OK ({summary}); {with_objects} with scene objects")


if __name__ == "__main__":
    app()
