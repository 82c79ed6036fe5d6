"""Emoji art styles: four free emoji sets shipped by npm as Iconify JSON, rendered from SVG with resvg.

Each style is one npm package holding ``icons.json`` (SVG bodies in Iconify JSON), ``chars.json`` (Unicode
sequence → icon name) and ``metadata.json`` (icon name by category). ``npm install --prefix DIR PACKAGES`` puts
them under ``DIR/node_modules``; nothing is downloaded at build time. The licence of each set is read from its
``package.json`` and checked against the one the shipped licence text is for.

A picture is the icon's SVG rendered by resvg (PyPI ``resvg-py``) at 4× on a transparent canvas, cut to the
square around its drawn pixels (the sets pad differently), laid on white and scaled to the target size (LANCZOS),
the same framing as a Noto font glyph. Same files, same bytes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from PIL import Image

LICENSE_DIR = Path(__file__).parent / "licenses"


@dataclass(frozen=True)
class Style:
    """One emoji set: its caption word, npm package, licence and attribution line."""

    name: str  # the word in captions: "twemoji" → "cat face, twemoji style"
    package: str  # npm package
    spdx: str  # the licence the package.json must declare
    license_file: str  # in pixlm/data/licenses/
    attribution: str


STYLES: dict[str, Style] = {s.name: s for s in (
    Style("noto", "@iconify-json/noto", "Apache-2.0", "Apache-2.0.txt",
          "**Noto Emoji** by Google (https://github.com/googlefonts/noto-emoji), Apache License 2.0"),
    Style("twemoji", "@iconify-json/twemoji", "CC-BY-4.0", "CC-BY-4.0.txt",
          "**Twemoji** by Twitter, Inc and other contributors (https://github.com/jdecked/twemoji), graphics "
          "licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); rendered, cropped and scaled"),
    Style("openmoji", "@iconify-json/openmoji", "CC-BY-SA-4.0", "CC-BY-SA-4.0.txt",
          "**OpenMoji** – the open-source emoji and icon project (https://openmoji.org), licensed under CC BY-SA "
          "4.0; rendered, cropped and scaled. Pictures and captions derived from them are shared under CC BY-SA 4.0"),
    Style("fluent", "@iconify-json/fluent-emoji-flat", "MIT", "MIT-fluent-emoji.txt",
          "**Fluent Emoji Flat** by Microsoft Corporation (https://github.com/microsoft/fluentui-emoji), MIT licence"),
)}
STYLE_INSTALL = "npm install --prefix DIR " + " ".join(s.package for s in STYLES.values())
RENDER_SCALE = 4  # render at 4× the target size, then scale down: smooth edges, exact framing


class EmojiSourceError(ValueError):
    """A source the emoji builder needs is not installed; the message says how to install it."""


def check_styles(styles: tuple[str, ...]) -> tuple[str, ...]:
    bad = [s for s in styles if s not in STYLES]
    if bad or not styles:
        raise ValueError(f"styles={styles!r}: each must be one of {tuple(STYLES)} (at least one)")
    return tuple(dict.fromkeys(styles))


def _private_use(cp: int) -> bool:
    return 0xE000 <= cp <= 0xF8FF or cp >= 0xF0000


class IconSet:
    """An installed Iconify JSON emoji set: SVG of an icon by name, and the Unicode sequence of each icon."""

    def __init__(self, node_modules: str | os.PathLike, style: str) -> None:
        self.style = STYLES[check_styles((style,))[0]]
        self.root = Path(node_modules) / self.style.package
        files = [self.root / f for f in ("icons.json", "chars.json", "metadata.json", "package.json")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise EmojiSourceError(f"emoji style {style!r} needs the npm package {self.style.package} ({missing[0]} "
                                   f"is missing): run `npm install --prefix {Path(node_modules).parent} "
                                   f"{self.style.package}` (all styles: `{STYLE_INSTALL}`), or leave {style!r} "
                                   f"out of --styles")
        package = json.loads(files[3].read_text(encoding="utf-8"))
        if package.get("license") != self.style.spdx:
            raise EmojiSourceError(f"{files[3]} declares licence {package.get('license')!r}, expected "
                                   f"{self.style.spdx!r} for the {style} style; check the package before using it")
        self.version = str(package.get("version", ""))
        data = json.loads(files[0].read_text(encoding="utf-8"))
        self._icons: dict[str, dict] = data["icons"]
        self._aliases: dict[str, dict] = data.get("aliases", {})
        self._size = (data.get("width", 16), data.get("height", 16))
        self._chars: dict[str, str] = json.loads(files[1].read_text(encoding="utf-8"))
        self._metadata = json.loads(files[2].read_text(encoding="utf-8"))

    @cached_property
    def sequences(self) -> dict[str, str]:
        """Unicode sequence (as characters) → icon name, for every icon that has one (private-use icons left out)."""
        out = {}
        for hexes, name in sorted(self._chars.items()):
            seq = "".join(chr(int(h, 16)) for h in hexes.split("-"))
            if not any(_private_use(ord(c)) for c in seq):
                out[seq] = name
        return out

    @cached_property
    def categories(self) -> dict[str, str]:
        """Icon name → category, lower case ("food & drink")."""
        return {icon: cat.lower() for cat, icons in sorted(self._metadata.get("categories", {}).items())
                for icon in icons}

    def svg(self, name: str) -> str:
        """The standalone SVG document of icon ``name`` (aliases resolved, flips applied)."""
        flips = []
        while name in self._aliases:  # an alias names its parent and may mirror it
            alias = self._aliases[name]
            flips.append((alias.get("hFlip", False), alias.get("vFlip", False), alias.get("rotate", 0)))
            name = alias["parent"]
        if name not in self._icons:
            raise KeyError(f"icon {name!r} is not in {self.root / 'icons.json'}")
        icon = self._icons[name]
        flips.append((icon.get("hFlip", False), icon.get("vFlip", False), icon.get("rotate", 0)))
        left, top = icon.get("left", 0), icon.get("top", 0)
        w, h = icon.get("width", self._size[0]), icon.get("height", self._size[1])
        h_flip = sum(f[0] for f in flips) % 2
        v_flip = sum(f[1] for f in flips) % 2
        rotate = sum(f[2] for f in flips) % 4
        body = icon["body"]
        cx, cy = left + w / 2, top + h / 2
        transform = []
        if rotate:
            transform.append(f"rotate({90 * rotate} {cx} {cy})")
        if h_flip or v_flip:
            transform.append(f"translate({cx} {cy}) scale({-1 if h_flip else 1} {-1 if v_flip else 1}) "
                             f"translate({-cx} {-cy})")
        if transform:
            body = f'<g transform="{" ".join(transform)}">{body}</g>'
        return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{body}</svg>')

    def render(self, name: str, size: int = 64) -> Image.Image:
        """Icon ``name`` on white, framed like a font glyph: the square around its drawn pixels, ``size``×``size``."""
        return render_svg(self.svg(name), size)


def render_svg(svg: str, size: int = 64, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """An SVG drawing cut to the square around its non-transparent pixels, on ``background``, ``size``×``size``."""
    try:
        import resvg_py
    except ImportError as e:  # a dependency of pixlm; a broken install says what to do
        raise EmojiSourceError("the SVG renderer is missing: `pip install resvg-py`") from e
    big = size * RENDER_SCALE
    png = resvg_py.svg_to_bytes(svg_string=svg, width=big, height=big, skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(png))) as im:
        art = im.convert("RGBA")
    box = art.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ValueError("the SVG draws nothing (fully transparent)")
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    canvas = Image.new("RGBA", (side, side), (*background, 255))
    canvas.alpha_composite(art.crop(box), ((side - (right - left)) // 2, (side - (bottom - top)) // 2))
    return canvas.convert("RGB").resize((size, size), Image.LANCZOS)


def copy_licences(root: Path, styles: tuple[str, ...]) -> list[str]:
    """Write ``LICENSE-<style>.txt`` for each style into ``root``; returns the attribution lines."""
    lines = []
    for name in styles:
        style = STYLES[name]
        (root / f"LICENSE-{name}.txt").write_bytes((LICENSE_DIR / style.license_file).read_bytes())
        lines.append(f"- {name} style: {style.attribution} (npm `{style.package}`; `LICENSE-{name}.txt`).")
    return lines
