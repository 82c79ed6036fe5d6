"""The README's emoji contact sheet: a dozen prompts in several styles, four seeds each.

    python benchmarks/emoji_sheet.py --model emoji --out docs/emoji_sheet.png

One row per prompt (its text on the left), seeds 0-3 side by side at twice the model's size. The prompts are the
README's, chosen to show names, styles named and left open, and a scene sentence; they were not tuned against.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

from pixlm.eval.report import label_font

PROMPTS = [
    "A beautiful beach scene with blue water, white sand and palm trees",
    "red apple",
    "cat face, twemoji style",
    "grinning face, noto style",
    "pizza, fluent style",
    "rocket, openmoji style",
    "house",
    "snowman, noto style",
    "thumbs up, medium skin tone, twemoji style",
    "sunflower",
    "police car, fluent style",
    "guitar, openmoji style",
]


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", default="docs/emoji_sheet.png")
    a = ap.parse_args(argv)
    from pixlm.pipelines.text_to_image import load_pipeline

    pipe = load_pipeline(a.model)
    cell, label_w = 128, 300
    sheet = Image.new("RGB", (label_w + cell * a.seeds, cell * len(PROMPTS)), "white")
    draw, font = ImageDraw.Draw(sheet), label_font(15)
    for r, prompt in enumerate(PROMPTS):
        images = pipe.generate(prompt, num_images_per_prompt=a.seeds, seed=0).images
        for c, im in enumerate(images):
            sheet.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (label_w + cell * c, cell * r))
        lines = textwrap.wrap(prompt, 30)
        draw.multiline_text((8, cell * r + 8), "\n".join(lines), fill="black", font=font, spacing=3)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(out)
    return out


if __name__ == "__main__":
    main()
