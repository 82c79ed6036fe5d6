"""The emoji world: real drawings with real names, as an image+caption imagefolder.

Pictures come from Debian's Noto Color Emoji font (``fonts-noto-color-emoji``, artwork under the Apache
License 2.0), which Pillow renders at its one bitmap size (109 px) with ``embedded_color=True``; each glyph is
centred on white and scaled to 64×64 (LANCZOS). Names come from three places, best first:

* OpenMoji's ``openmoji.json`` (npm ``openmoji``, CC BY-SA 4.0): CLDR annotations, tags, group/subgroup;
* ``emoji.json`` of npm ``emoji-datasource-google`` (MIT): names, short names, categories, skin-tone variations;
* Python's ``unicodedata.name`` (always there) and the Unicode block as a coarse category.

Without the npm packages the set is the font's single code points and their skin-tone variants; with them it
also holds ZWJ sequences (professions, families), keycaps and flags. A *variant* is an emoji with skin-tone
modifiers; its *base* is the same sequence without them.

``build_emoji_dataset`` writes::

    DIR/train/  DIR/test_emoji/  DIR/test_variant/   one imagefolder each (PNG + metadata.jsonl, several
                                                     caption rows per picture: name, name + keywords, category)
    DIR/splits.json     hexcodes per split, the split rule, the sources used
    DIR/catalog.jsonl   one line per emoji: hexcode, emoji, name, keywords, category, base, variant, split
    DIR/LICENSE-*.txt, DIR/ATTRIBUTION.md

Splits are a pure function of (seed, base sequence): ``test_emoji`` holds whole bases with all their variants
(never seen in training); ``test_variant`` holds one skin-tone variant of some bases whose other forms are in
``train``. The same sources and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

NOTO_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
NOTO_COPYRIGHT = "/usr/share/doc/fonts-noto-color-emoji/copyright"
NOTO_INSTALL = "apt-get install -y fonts-noto-color-emoji"
NPM_INSTALL = "npm install openmoji emoji-datasource-google"
GLYPH_SIZE = 109  # Noto Color Emoji is a CBDT bitmap font: 109 px is its only size
SPLITS = ("train", "test_emoji", "test_variant")
SKIN_TONES = {0x1F3FB: "light skin tone", 0x1F3FC: "medium-light skin tone", 0x1F3FD: "medium skin tone",
              0x1F3FE: "medium-dark skin tone", 0x1F3FF: "dark skin tone"}
_SKIP = {0x200D, 0x20E3, 0xFE0E, 0xFE0F, *SKIN_TONES}  # joiners, selectors and modifiers are not emoji alone
# Unicode blocks of the font's single code points: a coarse category when no npm data names one.
_BLOCKS = [(0x2000, 0x206F, "punctuation"), (0x2100, 0x214F, "letterlike symbol"), (0x2190, 0x21FF, "arrow"),
           (0x2300, 0x23FF, "technical symbol"), (0x2460, 0x24FF, "enclosed character"),
           (0x25A0, 0x25FF, "geometric shape"), (0x2600, 0x26FF, "symbol"), (0x2700, 0x27BF, "dingbat"),
           (0x2900, 0x297F, "arrow"), (0x2B00, 0x2BFF, "symbol"), (0x3000, 0x303F, "symbol"),
           (0x3200, 0x32FF, "enclosed character"), (0x1F000, 0x1F0FF, "game symbol"),
           (0x1F100, 0x1F1FF, "enclosed character"), (0x1F200, 0x1F2FF, "enclosed ideograph"),
           (0x1F300, 0x1F5FF, "pictograph"), (0x1F600, 0x1F64F, "emoticon"),
           (0x1F680, 0x1F6FF, "transport and map symbol"), (0x1F780, 0x1F7FF, "geometric shape"),
           (0x1F900, 0x1F9FF, "pictograph"), (0x1FA70, 0x1FAFF, "pictograph")]


class EmojiSourceError(ValueError):
    """A source the emoji builder needs is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Emoji:
    """One emoji of the catalogue."""

    seq: str  # the characters to render
    name: str  # base name, lower case: "thumbs up"
    keywords: tuple[str, ...] = ()
    category: str = ""  # "food & drink" (npm data) or a Unicode block phrase ("pictograph")
    subcategory: str = ""  # "food fruit"
    base: str = ""  # hexcode of the sequence without skin-tone modifiers (itself for a base)
    variant: str = ""  # "" for a base, else e.g. "medium skin tone"

    @property
    def hexcode(self) -> str:
        return hexcode(self.seq)

    def full_name(self) -> str:
        return f"{self.name}, {self.variant}" if self.variant else self.name

    def captions(self) -> list[str]:
        """Several captions: the name; name + keywords; name + category; name + subcategory."""
        full = self.full_name()
        caps = [full]
        words = [k for k in self.keywords if k not in full][:3]
        if words:
            caps.append(f"{full}, {', '.join(words)}")
        if self.category:
            caps.append(f"{full}, {self.category.replace('&', 'and')} emoji")
        if self.subcategory:
            caps.append(f"{full}, {self.subcategory}")
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


def _block(cp: int) -> str:
    for lo, hi, name in _BLOCKS:
        if lo <= cp <= hi:
            return name
    return "symbol"


def _clean(word: str) -> str:
    return " ".join(word.replace("_", " ").replace("⊛", "").strip().lower().split())


# ---------------------------------------------------------------------------------------------- sources
def open_font(path: str | os.PathLike = NOTO_FONT) -> ImageFont.FreeTypeFont:
    """The Noto Color Emoji font, laid out with raqm so ZWJ sequences and modifiers become one glyph."""
    if not Path(path).is_file():
        raise EmojiSourceError(f"emoji font {path} not found: install Debian's Noto Color Emoji with "
                               f"`{NOTO_INSTALL}` (or pass --font PATH to a NotoColorEmoji.ttf)")
    from PIL import features

    if not features.check("raqm"):
        raise EmojiSourceError("Pillow was built without libraqm, so emoji sequences cannot be shaped; install a "
                               "Pillow wheel from PyPI (it bundles raqm)")
    return ImageFont.truetype(str(path), GLYPH_SIZE, layout_engine=ImageFont.Layout.RAQM)


def _font_codepoints(path: str | os.PathLike) -> list[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as f:
        cmap = f.getBestCmap()
    return sorted(cp for cp in cmap if cp >= 0xA9 and cp not in _SKIP and not 0x1F1E6 <= cp <= 0x1F1FF
                  and not 0xE0020 <= cp <= 0xE007F and unicodedata.category(chr(cp)) not in ("Zs", "Cc", "Cf"))


def npm_sources(node_modules: str | os.PathLike | None) -> tuple[str, ...]:
    """The npm sources installed under ``node_modules`` (none when it is None)."""
    if not node_modules:
        return ()
    found = {"emoji-datasource": Path(node_modules) / "emoji-datasource-google" / "emoji.json",
             "openmoji": Path(node_modules) / "openmoji" / "data" / "openmoji.json"}
    return tuple(name for name, path in found.items() if path.is_file())


def find_npm_package(node_modules: str | os.PathLike, name: str, data_file: str) -> Path:
    """``node_modules/name/data_file``, or an EmojiSourceError naming the install command."""
    path = Path(node_modules) / name / data_file
    if not path.is_file():
        raise EmojiSourceError(f"npm package {name!r} not found ({path} is missing): run `npm install {name}` in "
                               f"{Path(node_modules).parent} (all sources: `{NPM_INSTALL}`), or leave it out "
                               f"of --sources")
    return path


@dataclass
class _Entry:
    seq: str
    names: dict[str, str] = field(default_factory=dict)  # source → name
    keywords: list[str] = field(default_factory=list)
    category: str = ""
    subcategory: str = ""
    block: str = ""  # Unicode block phrase of a single code point: the category when no npm data names one


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


def _single_glyph(font: ImageFont.FreeTypeFont, seq: str, advance: float) -> bool:
    """True when the font draws ``seq`` as one glyph (it knows the sequence), not as pieces."""
    try:
        return font.getlength(seq) <= advance * 1.05
    except (OSError, RuntimeError, ValueError):
        return False


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


def emoji_catalog(font_path: str | os.PathLike = NOTO_FONT, node_modules: str | os.PathLike | None = None,
                  sources: tuple[str, ...] = ("noto",)) -> list[Emoji]:
    """Every named emoji the font draws as one glyph, sorted by hexcode.

    ``sources`` are ``noto`` (required: the pictures), ``openmoji`` and ``emoji-datasource`` (names, keywords,
    categories and sequences; read from ``node_modules``).
    """
    allowed = ("noto", "openmoji", "emoji-datasource")
    bad = [s for s in sources if s not in allowed]
    if bad or "noto" not in sources:
        raise ValueError(f"sources={sources!r}: each must be one of {allowed}, and 'noto' (the pictures) is required")
    font = open_font(font_path)
    advance = font.getlength("\U0001F600")
    npm = Path(node_modules) if node_modules else None
    if npm is None and len(sources) > 1:
        raise EmojiSourceError(f"sources {sources!r} need --node-modules DIR, the node_modules folder where "
                               f"`{NPM_INSTALL}` was run")
    paths = {}
    if "emoji-datasource" in sources:
        paths["emoji-datasource"] = find_npm_package(npm, "emoji-datasource-google", "emoji.json")
    if "openmoji" in sources:
        paths["openmoji"] = find_npm_package(npm, "openmoji", "data/openmoji.json")
    entries: dict[str, _Entry] = {}
    for cp in _font_codepoints(font_path):
        e = _add(entries, chr(cp))
        e.block = _block(cp)
        for tone in sorted(SKIN_TONES):  # the font tells which code points take a skin tone
            if tone == min(SKIN_TONES) and not _single_glyph(font, chr(cp) + chr(tone), advance):
                break
            _add(entries, chr(cp) + chr(tone))
    if "emoji-datasource" in paths:
        _read_emoji_datasource(paths["emoji-datasource"], entries)
    if "openmoji" in paths:
        _read_openmoji(paths["openmoji"], entries)
    out = []
    for key in sorted(entries):
        e = entries[key]
        base = entries.get(_key(_strip_tones(e.seq)))
        if base is None or not _single_glyph(font, e.seq, advance):
            continue
        name = base.names.get("openmoji") or base.names.get("datasource") or ""
        if not name and len(_strip_tones(base.seq).replace("\ufe0f", "")) == 1:
            name = _clean(unicodedata.name(_strip_tones(base.seq).replace("\ufe0f", ""), ""))
        if not name:
            continue  # nothing to caption it with (a code point newer than this Python's Unicode data)
        keywords = tuple(dict.fromkeys(k for k in base.keywords if k and k != name))
        out.append(Emoji(e.seq, name, keywords, base.category or e.category or base.block,
                         base.subcategory or e.subcategory,
                         base=_key(_strip_tones(e.seq)), variant=", ".join(dict.fromkeys(_tones(e.seq)))))
    return out


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
    sources: tuple[str, ...] = ("noto",)
    node_modules: str = ""  # where `npm install openmoji emoji-datasource-google` put its packages
    font: str = NOTO_FONT
    size: int = 64
    seed: int = 0
    test_emoji_fraction: float = 0.1
    test_variant_fraction: float = 0.5
    max_bases: int = 0  # keep N bases drawn by (seed, base), for small test sets; 0 = all
    overwrite: bool = False


_ATTRIBUTION = """# Attribution

Pictures: **Noto Color Emoji** by Google, from Debian's `fonts-noto-color-emoji` package; artwork under the
Apache License 2.0 (font under the SIL Open Font License 1.1). See `LICENSE-noto-color-emoji.txt`. The pictures
are the font's glyphs rendered by Pillow at {glyph} px, centred on white and scaled to {size}×{size}.
{extra}
Names without npm data: Python's `unicodedata` (Unicode Character Database, Unicode License v3).
Built by `pixlm data emoji` (sources: {sources}; seed {seed}).
"""
_OPENMOJI = """
Names, tags and groups in the captions: **OpenMoji** (https://openmoji.org), the open-source emoji and icon
project, licensed under CC BY-SA 4.0 (`LICENSE-openmoji.txt`). Captions derived from them are shared under the
same licence.
"""
_DATASOURCE = """
Names, short names, categories and skin-tone variations: **emoji-datasource-google** by Cal Henderson / iamcal
(https://github.com/iamcal/emoji-data), MIT licence (`LICENSE-emoji-datasource.txt`).
"""


def build_emoji_dataset(cfg: EmojiDataConfig) -> dict[str, Any]:
    """Write the emoji imagefolders, splits and licence files to ``cfg.out``; returns the summary in splits.json."""
    if cfg.size < 8:
        raise ValueError(f"size={cfg.size} must be at least 8 pixels")
    out = Path(cfg.out)
    if (out / "splits.json").exists() and not cfg.overwrite:
        raise ValueError(f"{out / 'splits.json'} already exists; choose another folder or pass --overwrite")
    catalog = emoji_catalog(cfg.font, cfg.node_modules or None, tuple(cfg.sources))
    if cfg.max_bases:
        keep = set(sorted({e.base for e in catalog}, key=lambda b: _draw(cfg.seed, "keep:" + b))[:cfg.max_bases])
        catalog = [e for e in catalog if e.base in keep]
    split = assign_splits(catalog, cfg.seed, cfg.test_emoji_fraction, cfg.test_variant_fraction)
    font = open_font(cfg.font)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for s in SPLITS:
        (tmp / s).mkdir(parents=True)
    metas = {s: open(tmp / s / "metadata.jsonl", "w", encoding="utf-8") for s in SPLITS}
    try:
        with open(tmp / "catalog.jsonl", "w", encoding="utf-8") as cat:
            for e in catalog:
                s = split[e.hexcode]
                name = e.hexcode.lower() + ".png"
                render_emoji(font, e.seq, cfg.size).save(tmp / s / name, format="PNG")
                for text in e.captions():
                    metas[s].write(json.dumps({"file_name": name, "text": text, "emoji": e.seq, "hexcode": e.hexcode,
                                               "base": e.base, "variant": e.variant}, ensure_ascii=False) + "\n")
                cat.write(json.dumps({**asdict(e), "hexcode": e.hexcode, "split": s}, ensure_ascii=False) + "\n")
    finally:
        for f in metas.values():
            f.close()
    summary = {"seed": cfg.seed, "sources": list(cfg.sources), "size": cfg.size, "glyph_size": GLYPH_SIZE,
               "rule": {"test_emoji": f"whole bases (with every skin-tone variant) with sha256(seed:base) < "
                                      f"{cfg.test_emoji_fraction}",
                        "test_variant": f"one skin-tone variant of {cfg.test_variant_fraction:.0%} of the other "
                                        "bases that have variants; the base and its other variants stay in train"},
               "counts": {s: sum(v == s for v in split.values()) for s in SPLITS},
               **{s: sorted(h for h, v in split.items() if v == s) for s in SPLITS}}
    (tmp / "splits.json").write_text(json.dumps(summary, indent=1) + "\n")
    _write_licences(tmp, cfg)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary


def _write_licences(root: Path, cfg: EmojiDataConfig) -> None:
    if Path(NOTO_COPYRIGHT).is_file():
        shutil.copyfile(NOTO_COPYRIGHT, root / "LICENSE-noto-color-emoji.txt")
    else:  # a font passed by path outside Debian's package: state the licence we rely on
        (root / "LICENSE-noto-color-emoji.txt").write_text(
            "Noto Color Emoji artwork: Apache License 2.0, https://www.apache.org/licenses/LICENSE-2.0\n"
            "Font: SIL Open Font License 1.1, https://openfontlicense.org\n")
    extra = ""
    if "openmoji" in cfg.sources:
        shutil.copyfile(Path(cfg.node_modules) / "openmoji" / "LICENSE.txt", root / "LICENSE-openmoji.txt")
        extra += _OPENMOJI
    if "emoji-datasource" in cfg.sources:
        shutil.copyfile(Path(cfg.node_modules) / "emoji-datasource-google" / "LICENSE",
                        root / "LICENSE-emoji-datasource.txt")
        extra += _DATASOURCE
    (root / "ATTRIBUTION.md").write_text(_ATTRIBUTION.format(glyph=GLYPH_SIZE, size=cfg.size, extra=extra,
                                                             sources=", ".join(cfg.sources), seed=cfg.seed))
