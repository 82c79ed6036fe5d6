"""The emoji world: real drawings in several art styles with real names, as an image+caption imagefolder.

Pictures come from four free emoji sets that npm ships as Iconify JSON (``pixlm.data.emoji_styles``): Noto
(Apache 2.0), Twemoji (CC BY 4.0), OpenMoji (CC BY-SA 4.0) and Microsoft Fluent Emoji Flat (MIT), each rendered
from SVG by resvg, framed like a font glyph on white at 64×64. Names come from, best first:

* OpenMoji's ``openmoji.json`` (npm ``openmoji``, CC BY-SA 4.0): CLDR annotations, tags, group/subgroup;
* ``emoji.json`` of npm ``emoji-datasource-google`` (MIT): names, short names, categories;
* the icon sets themselves: CLDR-derived icon names ("cat-face") and categories.

An emoji is one Unicode sequence; a *variant* is an emoji with skin-tone modifiers and its *base* is the same
sequence without them. Each emoji has one picture per style that draws it. Install everything with::

    npm install --prefix DIR @iconify-json/noto @iconify-json/twemoji @iconify-json/openmoji \
        @iconify-json/fluent-emoji-flat openmoji emoji-datasource-google

``build_emoji_dataset`` writes::

    DIR/train/  DIR/test_emoji/  DIR/test_variant/   one imagefolder each: STYLE/HEXCODE.png + metadata.jsonl, several
                                                     caption rows per picture ("cat face"; "cat face, twemoji style";
                                                     name + keywords + style; name + category)
    DIR/splits.json     hexcodes per split, counts per split and style, the split rule, the package versions used
    DIR/catalog.jsonl   one line per emoji: hexcode, emoji, name, keywords, category, base, variant, styles, split
    DIR/LICENSE-<style>.txt, DIR/LICENSE-openmoji-data.txt, DIR/LICENSE-emoji-datasource.txt, DIR/ATTRIBUTION.md

Splits are a pure function of (seed, base sequence) and hold for every style at once: ``test_emoji`` holds whole
bases with all their variants, never seen in training in any style; ``test_variant`` holds one skin-tone variant
of some bases whose other forms are in ``train``. The same packages and seed give the same bytes.

``open_font``/``render_emoji`` draw a single emoji with Debian's Noto Color Emoji font (quick pictures in tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from pixlm.data.emoji_styles import STYLES, EmojiSourceError, IconSet, check_styles, copy_licences

NOTO_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
NOTO_INSTALL = "apt-get install -y fonts-noto-color-emoji"
NPM_INSTALL = "npm install openmoji emoji-datasource-google"  # names and keywords (optional)
GLYPH_SIZE = 109  # Noto Color Emoji is a CBDT bitmap font: 109 px is its only size
SPLITS = ("train", "test_emoji", "test_variant")
SKIN_TONES = {0x1F3FB: "light skin tone", 0x1F3FC: "medium-light skin tone", 0x1F3FD: "medium skin tone",
              0x1F3FE: "medium-dark skin tone", 0x1F3FF: "dark skin tone"}
NAME_SOURCES = ("openmoji", "emoji-datasource")


@dataclass(frozen=True)
class Emoji:
    """One emoji of the catalogue."""

    seq: str  # the characters to render
    name: str  # base name, lower case: "thumbs up"
    keywords: tuple[str, ...] = ()
    category: str = ""  # "food & drink"
    subcategory: str = ""  # "food fruit"
    base: str = ""  # hexcode of the sequence without skin-tone modifiers (itself for a base)
    variant: str = ""  # "" for a base, else e.g. "medium skin tone"

    @property
    def hexcode(self) -> str:
        return hexcode(self.seq)

    def full_name(self) -> str:
        return f"{self.name}, {self.variant}" if self.variant else self.name

    def captions(self, style: str = "") -> list[str]:
        """Several captions: the name; with a ``style``, name + "STYLE style"; name + keywords (+ style);
        name + category; name + subcategory (+ style). Rows without a style word let a plain prompt draw any style."""
        full = self.full_name()
        tail = f", {style} style" if style else ""
        caps = [full, full + tail]
        words = [k for k in self.keywords if k not in full][:3]
        if words:
            caps.append(f"{full}, {', '.join(words)}{tail}")
        if self.category:
            caps.append(f"{full}, {self.category.replace('&', 'and')} emoji")
        if self.subcategory:
            caps.append(f"{full}, {self.subcategory}{tail}")
        return list(dict.fromkeys(caps))


def hexcode(seq: str) -> str:
    """'👍🏽' → '1F44D-1F3FD' (upper case, dash-separated, as in OpenMoji and emoji-datasource)."""
    return "-".join(f"{ord(c):04X}" for c in seq)


def _key(seq: str) -> str:
    """Identity of an emoji: its hexcode without variation selectors (qualified and unqualified forms match)."""
    return hexcode(seq.replace("\ufe0f", "").replace("\ufe0e", ""))


def _seq(hexcodes: str) -> str:
    return "".join(chr(int(h, 16)) for h in hexcodes.split("-"))


def _strip_tones(seq: str) -> str:
    return "".join(c for c in seq if ord(c) not in SKIN_TONES)


def _tones(seq: str) -> list[str]:
    return [SKIN_TONES[ord(c)] for c in seq if ord(c) in SKIN_TONES]


def _clean(word: str) -> str:
    return " ".join(word.replace("_", " ").replace("⊛", "").strip().lower().split())


# ---------------------------------------------------------------------------------------------- sources
def open_font(path: str | os.PathLike = NOTO_FONT) -> ImageFont.FreeTypeFont:
    """The Noto Color Emoji font, laid out with raqm so ZWJ sequences and modifiers become one glyph."""
    if not Path(path).is_file():
        raise EmojiSourceError(f"emoji font {path} not found: install Debian's Noto Color Emoji with "
                               f"`{NOTO_INSTALL}` (or pass the path of a NotoColorEmoji.ttf)")
    from PIL import features

    if not features.check("raqm"):
        raise EmojiSourceError("Pillow was built without libraqm, so emoji sequences cannot be shaped; install a "
                               "Pillow wheel from PyPI (it bundles raqm)")
    return ImageFont.truetype(str(path), GLYPH_SIZE, layout_engine=ImageFont.Layout.RAQM)


def npm_sources(node_modules: str | os.PathLike | None) -> tuple[str, ...]:
    """The npm name data (of NAME_SOURCES) installed under ``node_modules`` (none when it is None)."""
    if not node_modules:
        return ()
    found = {"emoji-datasource": Path(node_modules) / "emoji-datasource-google" / "emoji.json",
             "openmoji": Path(node_modules) / "openmoji" / "data" / "openmoji.json"}
    return tuple(name for name, path in found.items() if path.is_file())


def find_npm_package(node_modules: str | os.PathLike, name: str, data_file: str) -> Path:
    """``node_modules/name/data_file``, or an EmojiSourceError naming the install command."""
    path = Path(node_modules) / name / data_file
    if not path.is_file():
        raise EmojiSourceError(f"npm package {name!r} not found ({path} is missing): run `npm install --prefix "
                               f"{Path(node_modules).parent} {name}` (all name data: `{NPM_INSTALL}`), or leave it "
                               f"out of --names")
    return path


@dataclass
class _Entry:
    seq: str
    names: dict[str, str] = field(default_factory=dict)  # source → name
    keywords: list[str] = field(default_factory=list)
    category: str = ""
    subcategory: str = ""


def _add(entries: dict[str, _Entry], seq: str) -> _Entry:
    k = _key(seq)
    if k not in entries:
        entries[k] = _Entry(seq)
    elif "\ufe0f" in seq and "\ufe0f" not in entries[k].seq:
        entries[k].seq = seq  # prefer the fully qualified form
    return entries[k]


def _read_emoji_datasource(path: Path, entries: dict[str, _Entry]) -> None:
    for rec in json.loads(path.read_text(encoding="utf-8")):
        if not rec.get("has_img_google", True):
            continue
        tones = sorted((rec.get("skin_variations") or {}).items())
        forms = [rec["unified"]] + [v["unified"] for k, v in tones if "-" not in k]  # one tone for the whole emoji
        for unified in forms:
            e = _add(entries, _seq(unified))
            if _strip_tones(e.seq) == e.seq:  # names and keywords belong to the base
                e.names.setdefault("datasource", _clean(rec.get("name") or ""))
                e.keywords += [_clean(s) for s in rec.get("short_names", [])]
            e.category = e.category or _clean(rec.get("category", ""))
            e.subcategory = e.subcategory or _clean(rec.get("subcategory", "").replace("-", " "))


def _read_openmoji(path: Path, entries: dict[str, _Entry]) -> None:
    for rec in json.loads(path.read_text(encoding="utf-8")):
        group = rec.get("group", "")
        if group.startswith("extras") or not rec.get("emoji") or rec.get("skintone_combination") == "multiple":
            continue  # OpenMoji's own extras have no Unicode sequence; mixed-tone pairs are not one variant
        e = _add(entries, rec["emoji"])
        if not rec.get("skintone"):
            e.names["openmoji"] = _clean(rec.get("annotation", ""))
            tags = [t for field_ in ("tags", "openmoji_tags") for t in (rec.get(field_) or "").split(",")]
            e.keywords = [_clean(t) for t in tags if _clean(t)] + e.keywords
        e.category = e.category or _clean(group.replace("-", " & "))
        e.subcategory = e.subcategory or _clean(rec.get("subgroups", "").replace("-", " "))


def render_emoji(font: ImageFont.FreeTypeFont, seq: str, size: int = 64,
                 background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The glyph of ``seq`` centred on a square ``background`` canvas, scaled to ``size``×``size`` (LANCZOS)."""
    left, top, right, bottom = font.getbbox(seq)
    side = max(right - left, bottom - top)
    glyph = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text(((side - (right - left)) // 2 - left, (side - (bottom - top)) // 2 - top), seq,
                               font=font, embedded_color=True)
    canvas = Image.new("RGBA", (side, side), (*background, 255))
    canvas.alpha_composite(glyph)
    return canvas.convert("RGB").resize((size, size), Image.LANCZOS)


def _icon_name(icon: str) -> str:
    """Iconify icon name → emoji name: "cat-face" → "cat face" (CLDR short names with dashes)."""
    return _clean(icon.replace("-", " "))


def emoji_catalog(node_modules: str | os.PathLike, styles: tuple[str, ...] = tuple(STYLES),
                  name_sources: tuple[str, ...] = NAME_SOURCES) -> tuple[list[Emoji], dict[str, dict[str, str]]]:
    """Every emoji some style draws, sorted by sequence, and hexcode → {style: icon name}.

    ``styles`` are Iconify sets (``pixlm.data.emoji_styles.STYLES``), ``name_sources`` the npm name data
    (``openmoji``, ``emoji-datasource``), all read from ``node_modules``; a missing package is an
    ``EmojiSourceError`` naming the install command."""
    styles = check_styles(tuple(styles))
    bad = [s for s in name_sources if s not in NAME_SOURCES]
    if bad:
        raise ValueError(f"name_sources={name_sources!r}: each must be one of {NAME_SOURCES}")
    sets = {s: IconSet(node_modules, s) for s in styles}
    entries: dict[str, _Entry] = {}
    icons: dict[str, dict[str, str]] = {}  # key → style → icon name
    for style, icon_set in sets.items():
        for seq, icon in icon_set.sequences.items():
            _add(entries, seq)
            icons.setdefault(_key(seq), {})[style] = icon
    if "emoji-datasource" in name_sources:
        _read_emoji_datasource(find_npm_package(node_modules, "emoji-datasource-google", "emoji.json"), entries)
    if "openmoji" in name_sources:
        _read_openmoji(find_npm_package(node_modules, "openmoji", "data/openmoji.json"), entries)
    catalog, pictures = [], {}
    for key in sorted(icons):
        e = entries[key]
        base_key = _key(_strip_tones(e.seq))
        base = entries.get(base_key, e)
        base_icons = icons.get(base_key, {})
        name = base.names.get("openmoji") or base.names.get("datasource") or ""
        category = base.category or e.category
        for style in styles:  # the icon sets name and file every emoji they draw
            if not name and style in base_icons:
                name = _icon_name(base_icons[style])
            if not category and style in icons[key]:
                category = sets[style].categories.get(icons[key][style], "")
        if not name:  # a variant whose base no style draws: its own icon name carries the tone words
            name = _icon_name(next(iter(icons[key].values())))
        keywords = tuple(dict.fromkeys(k for k in base.keywords if k and k != name))
        emoji = Emoji(e.seq, name, keywords, category, base.subcategory or e.subcategory, base=base_key,
                      variant=", ".join(dict.fromkeys(_tones(e.seq))))
        catalog.append(emoji)
        pictures[emoji.hexcode] = icons[key]
    return catalog, pictures

# ---------------------------------------------------------------------------------------------- splits
def _draw(seed: int, text: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, text): split membership never depends on the catalogue's order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big") / 2**64


def assign_splits(catalog: list[Emoji], seed: int = 0, test_emoji_fraction: float = 0.1,
                  test_variant_fraction: float = 0.5) -> dict[str, str]:
    """hexcode → split. Whole bases go to ``test_emoji``; of the other bases with skin-tone variants, a
    ``test_variant_fraction`` share gives one variant (never the base itself) to ``test_variant``."""
    for name, v in (("test_emoji_fraction", test_emoji_fraction), ("test_variant_fraction", test_variant_fraction)):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name}={v} must be in [0, 1)")
    groups: dict[str, list[Emoji]] = {}
    for e in catalog:
        groups.setdefault(e.base, []).append(e)
    split = {}
    for base, members in groups.items():
        if _draw(seed, "emoji:" + base) < test_emoji_fraction:
            split.update({e.hexcode: "test_emoji" for e in members})
            continue
        split.update({e.hexcode: "train" for e in members})
        variants = [e for e in members if e.variant]
        has_base = any(not e.variant for e in members)
        if variants and has_base and _draw(seed, "variant:" + base) < test_variant_fraction:
            held = min(variants, key=lambda e: _draw(seed, "pick:" + e.hexcode))
            split[held.hexcode] = "test_variant"
    return split


# ---------------------------------------------------------------------------------------------- writing
@dataclass
class EmojiDataConfig:
    out: str = "data/emoji"
    node_modules: str = "node_modules"  # where `npm install --prefix DIR ...` put the packages (DIR/node_modules)
    styles: tuple[str, ...] = tuple(STYLES)
    name_sources: tuple[str, ...] = NAME_SOURCES  # npm name data; () = the icon sets' own names
    size: int = 64
    seed: int = 0
    test_emoji_fraction: float = 0.1
    test_variant_fraction: float = 0.5
    max_bases: int = 0  # keep N bases drawn by (seed, base), for small test sets; 0 = all
    overwrite: bool = False


_ATTRIBUTION = """# Attribution

Pictures: emoji in {n} styles, each rendered from its SVG by resvg, cut to the square around the drawing, laid on
white and scaled to {size}×{size}:

{styles}
{names}
Built by `pixlm data emoji` (styles: {style_list}; name data: {name_list}; seed {seed}).
"""
_NAME_NOTES = {
    "openmoji": "- Names, tags and groups in the captions: **OpenMoji** (npm `openmoji`), CC BY-SA 4.0 "
                "(`LICENSE-openmoji-data.txt`); captions derived from them are shared under the same licence.",
    "emoji-datasource": "- Names, short names and categories: **emoji-datasource-google** by Cal Henderson / iamcal "
                        "(https://github.com/iamcal/emoji-data), MIT licence (`LICENSE-emoji-datasource.txt`).",
}


def build_emoji_dataset(cfg: EmojiDataConfig) -> dict[str, Any]:
    """Write the emoji imagefolders, splits and licence files to ``cfg.out``; returns the summary in splits.json."""
    if cfg.size < 8:
        raise ValueError(f"size={cfg.size} must be at least 8 pixels")
    out = Path(cfg.out)
    if (out / "splits.json").exists() and not cfg.overwrite:
        raise ValueError(f"{out / 'splits.json'} already exists; choose another folder or pass --overwrite")
    styles = check_styles(tuple(cfg.styles))
    catalog, pictures = emoji_catalog(cfg.node_modules, styles, tuple(cfg.name_sources))
    if cfg.max_bases:
        keep = set(sorted({e.base for e in catalog}, key=lambda b: _draw(cfg.seed, "keep:" + b))[:cfg.max_bases])
        catalog = [e for e in catalog if e.base in keep]
    split = assign_splits(catalog, cfg.seed, cfg.test_emoji_fraction, cfg.test_variant_fraction)
    sets = {s: IconSet(cfg.node_modules, s) for s in styles}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for s in SPLITS:
        for style in styles:
            (tmp / s / style).mkdir(parents=True)
    metas = {s: open(tmp / s / "metadata.jsonl", "w", encoding="utf-8") for s in SPLITS}
    counts = {s: dict.fromkeys(styles, 0) for s in SPLITS}
    try:
        with open(tmp / "catalog.jsonl", "w", encoding="utf-8") as cat:
            for e in catalog:
                s = split[e.hexcode]
                drawn = [style for style in styles if style in pictures[e.hexcode]]
                for style in drawn:
                    name = f"{style}/{e.hexcode.lower()}.png"
                    sets[style].render(pictures[e.hexcode][style], cfg.size).save(tmp / s / name, format="PNG")
                    counts[s][style] += 1
                    for text in e.captions(style):
                        metas[s].write(json.dumps({"file_name": name, "text": text, "emoji": e.seq,
                                                   "hexcode": e.hexcode, "base": e.base, "variant": e.variant,
                                                   "style": style}, ensure_ascii=False) + "\n")
                cat.write(json.dumps({**asdict(e), "hexcode": e.hexcode, "styles": drawn, "split": s},
                                     ensure_ascii=False) + "\n")
    finally:
        for f in metas.values():
            f.close()
    summary = {"seed": cfg.seed, "styles": list(styles), "name_sources": list(cfg.name_sources), "size": cfg.size,
               "packages": {sets[s].style.package: sets[s].version for s in styles},
               "rule": {"test_emoji": f"whole bases (with every skin-tone variant, in every style) with "
                                      f"sha256(seed:base) < {cfg.test_emoji_fraction}",
                        "test_variant": f"one skin-tone variant of {cfg.test_variant_fraction:.0%} of the other "
                                        "bases that have variants; the base and its other variants stay in train"},
               "counts": {s: sum(v == s for v in split.values()) for s in SPLITS},
               "pictures": counts,
               **{s: sorted(h for h, v in split.items() if v == s) for s in SPLITS}}
    (tmp / "splits.json").write_text(json.dumps(summary, indent=1) + "\n")
    _write_licences(tmp, cfg, styles)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary


def _write_licences(root: Path, cfg: EmojiDataConfig, styles: tuple[str, ...]) -> None:
    style_lines = copy_licences(root, styles)
    if "openmoji" in cfg.name_sources:
        shutil.copyfile(Path(cfg.node_modules) / "openmoji" / "LICENSE.txt", root / "LICENSE-openmoji-data.txt")
    if "emoji-datasource" in cfg.name_sources:
        shutil.copyfile(Path(cfg.node_modules) / "emoji-datasource-google" / "LICENSE",
                        root / "LICENSE-emoji-datasource.txt")
    names = "\n".join(_NAME_NOTES[n] for n in cfg.name_sources)
    names += "\n- Names of emoji without npm name data: the icon sets' own (CLDR-derived) icon names.\n"
    (root / "ATTRIBUTION.md").write_text(_ATTRIBUTION.format(
        n=len(styles), size=cfg.size, styles="\n".join(style_lines), names=names, style_list=", ".join(styles),
        name_list=", ".join(cfg.name_sources) or "none", seed=cfg.seed))
