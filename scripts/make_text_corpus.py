"""Write the character-level text corpus ``data/text/web.txt.gz`` and its ``README.md``.

Source: the World English Bible (WEB, the 2020 stable text), a modern-English translation that
its translators dedicated to the public domain, as Debian ships it in the SWORD module
``engWEB2015eb`` of the package

    sword-text-web 426.0-1 (Debian, section main, architecture all; module version 426.0)

installed with ``apt-get install sword-text-web`` (into ``/usr/share/sword``), or unpacked
without installing::

    apt-get download sword-text-web && dpkg-deb -x sword-text-web_426.0-1_all.deb root
    python scripts/make_text_corpus.py --sword root/usr/share/sword

The module is read directly, no SWORD library needed: a zText module keeps, per testament
(``ot``, ``nt``), a block index ``*.bzs`` (offset, compressed size and inflated size of each zlib
block: three little-endian uint32), a verse index ``*.bzv`` (block, offset in the inflated
block, size: uint32, uint32, uint16) and the blocks ``*.bzz``. The verse entries, in the
module's order (Old Testament, then New Testament), are OSIS XML.

What is kept: the 1,189 chapters of the 66 books of :data:`BOOKS` (Genesis to Malachi, Matthew
to Revelation), each book preceded by its title. Left out: the deuterocanonical books this
edition adds after Malachi, among them Greek Daniel and Esther, which repeat much of Daniel and
Esther and which the module stores partly outside their chapters; the translators' preface and
the glossary. (The module has no title for Hosea, so that book starts without one.)

Cleaning of each chapter's OSIS:

- footnotes (``<note>``) are dropped whole (a space left where one stood between two words);
  all other markup (Strong's numbers on ``<w>``, quotations, names, speakers) is removed and its
  text kept; verse numbers are not part of the text, so none appear;
- a title (a book's, a psalm's) becomes a paragraph of its own; a paragraph mark
  (``type="x-p"``) starts a paragraph (a blank line); a poetry line's end (``<l eID>``) and a
  list item's end end a line;
- entities are unescaped; curly quotes become ``'`` and ``"``, the em dash ``--``; the text is
  decomposed (NFKD) and any character that is still not printable ASCII or a newline is dropped
  (the script counts them: none in this package);
- runs of spaces collapse to one, spaces at either end of a line and before punctuation are
  removed, and at most one blank line is kept in a row; chapters and books are a blank line
  apart.

The whole cleaned text (about 4.0 million characters) is written, unless ``--max-chars`` asks
for less (then cut back to the end of the last whole paragraph), with gzip at level 9 and a zero
timestamp, so that the same package gives the same bytes. Because the text is changed (markup,
footnotes, punctuation), it is not itself "the World English Bible", a name eBible.org asks to
keep for the unchanged text; README.md says so.

    python scripts/make_text_corpus.py [--sword /usr/share/sword] [--max-chars N]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import html
import re
import struct
import textwrap
import unicodedata
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "data" / "text"
NAME = "web"
PACKAGE, VERSION, MODULE = "sword-text-web", "426.0-1", "engWEB2015eb"

PUNCTUATION = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--"}
CHAPTER = re.compile(
    r'<chapter\b[^>]*\ssID="([^"]+)"[^>]*/>(.*?)<chapter\b[^>]*\seID="\1"[^>]*/>', re.S
)
MAIN_TITLE = re.compile(r'<title\b[^>]*type="main"[^>]*>(.*?)</title>', re.S)
# Markup that breaks a paragraph (a blank line) or a line; the rest is removed, its text kept.
PARAGRAPH = re.compile(r'<(?:div|lb)\b[^>]*type="x-p"[^>]*/>')
LINE = re.compile(r"<l\b[^>]*\seID=[^>]*/>|</item>")
TITLE = re.compile(r"<title\b[^>]*>(.*?)</title>", re.S)
NOTE = re.compile(r"<note\b.*?</note>", re.S)
# The module leaves no space between a word and the next where a footnote sat between them.
WORD_NEXT = re.compile(r"(?:\s*<(?!note\b)[^>]*>)*\s*(?:<w\b|[A-Za-z\u2018\u201c])")
SPACE_BEFORE_MARK = re.compile(r"(?<=[\w'\"]) +(?=[,.;:!?])")
FRONT_END = re.compile(r'<div\b[^>]*\seID="[^"]*"[^>]*type="(?:front|introduction)"[^>]*/>')
TAG = re.compile(r"<[^>]*>")
# The books of the 66-book canon, in the module's order: the deuterocanonical books that this
# edition places after Malachi (Tobit to 4 Maccabees, and the Greek Daniel and Esther, which
# repeat much of Daniel and Esther) are left out.
OLD_TESTAMENT = (
    "Gen Exod Lev Num Deut Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth Job Ps "
    "Prov Eccl Song Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal"
).split()
NEW_TESTAMENT = (
    "Matt Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm "
    "Heb Jas 1Pet 2Pet 1John 2John 3John Jude Rev"
).split()
BOOKS = OLD_TESTAMENT + NEW_TESTAMENT
CHAPTERS = 1189  # in the 66 books: 929 and 260


def entries(module_dir: Path) -> list[str]:
    """The OSIS text of every verse entry of a zText module, in the module's order."""
    out = []
    for testament in ("ot", "nt"):
        bzs = (module_dir / f"{testament}.bzs").read_bytes()
        bzv = (module_dir / f"{testament}.bzv").read_bytes()
        bzz = (module_dir / f"{testament}.bzz").read_bytes()
        blocks = []
        for start, size, inflated in struct.iter_unpack("<III", bzs):
            block = zlib.decompress(bzz[start : start + size])
            if len(block) != inflated:
                raise ValueError(
                    f"{testament}.bzz: a block inflates to {len(block)} bytes, "
                    f"its index says {inflated}"
                )
            blocks.append(block)
        for block, offset, size in struct.iter_unpack("<IIH", bzv):
            if size:
                out.append(blocks[block][offset : offset + size].decode("utf-8"))
    return out


def _notes_dropped(osis: str) -> str:
    """``osis`` without its footnotes, a space left where one stood between two words."""
    return NOTE.sub(lambda m: " " if WORD_NEXT.match(osis, m.end()) else "", osis)


def clean(osis: str) -> tuple[str, collections.Counter]:
    """Plain ASCII text of OSIS markup (see the module's docstring), and what the ASCII filter
    dropped (accents left apart by NFKD, other non-ASCII characters)."""
    osis = _notes_dropped(osis)
    osis = TITLE.sub(lambda m: "\n\n" + TAG.sub(" ", m.group(1)) + "\n\n", osis)
    osis = PARAGRAPH.sub("\n\n", osis)
    osis = LINE.sub("\n", osis)
    text = html.unescape(TAG.sub("", osis))
    for old, new in PUNCTUATION.items():
        text = text.replace(old, new)
    text = unicodedata.normalize("NFKD", text)
    dropped = collections.Counter(c for c in text if not (c in "\n\t" or " " <= c <= "~"))
    text = "".join(c for c in text if c == "\n" or " " <= c <= "~")
    text = re.sub(r"[ \t]+", " ", text)
    text = SPACE_BEFORE_MARK.sub("", re.sub(r" *\n *", "\n", text))
    return re.sub(r"\n{3,}", "\n\n", text).strip(), dropped


def corpus(module_dir: Path) -> tuple[str, collections.Counter]:
    """The cleaned books of :data:`BOOKS`, and what cleaning dropped.

    Each book is its title (the module's main titles before its first chapter, on one line)
    and its chapters, a blank line apart; chapters of other books, and whatever lies between
    chapters other than a book's title (front matter, the glossary), are left out.
    """
    osis = " ".join(entries(module_dir))
    parts, dropped, seen, last_end, chapters = [], collections.Counter(), set(), 0, 0
    for match in CHAPTER.finditer(osis):
        book = match.group(1).split(".")[0]
        gap, last_end = osis[last_end : match.start()], match.end()
        if book not in BOOKS:
            continue
        if book not in seen:
            seen.add(book)
            gap = FRONT_END.split(gap)[-1]  # the preface before Genesis is no title
            title = " ".join(TAG.sub(" ", t) for t in MAIN_TITLE.findall(gap))
            if title.strip():
                parts.append(clean(f"<title>{title}</title>")[0])
        text, lost = clean(match.group(2))
        parts.append(text)
        dropped += lost
        chapters += 1
    missing = [name for name in BOOKS if name not in seen]
    if missing or chapters != CHAPTERS:
        raise ValueError(f"{chapters} chapters read, {CHAPTERS} expected; books missing: {missing}")
    return "\n\n".join(parts) + "\n", dropped


def truncate(text: str, max_chars: int) -> str:
    """The first ``max_chars`` characters, cut back to the end of the last whole paragraph."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n\n", 0, max_chars)
    return text[: cut + 1] if cut > 0 else text[:max_chars]


def readme(text: str, gz: bytes, full_chars: int, dropped: collections.Counter) -> str:
    """The folder's README: source, package, licence with its notice, cleaning, sizes."""
    vocab = "".join(sorted(set(text)))
    printable = vocab.replace("\n", "")
    kept = (
        "the whole cleaned text"
        if len(text) == full_chars
        else (f"its first {len(text):,} characters (cut at a paragraph's end)")
    )
    lost = f"{sum(dropped.values())} characters" if dropped else "none in this package"
    cleaning = f"""
`scripts/make_text_corpus.py` reads the module's zText files directly (zlib blocks of OSIS XML)
and keeps the chapters of the 66 books, each book preceded by its title; it leaves out the
deuterocanonical books that this edition adds after Malachi (among them Greek Daniel and
Esther, which repeat much of Daniel and Esther), the translators' preface and the glossary.
Hosea starts without a title, as the module has none for it. In each chapter it drops the
footnotes; removes the word tags (Strong's numbers) and all other markup, keeping their text
(verse numbers are not part of the text); makes each title a paragraph, starts a paragraph at
each paragraph mark and a line at each poetry line; unescapes entities; turns curly quotes into
`'` and `"` and the em dash into `--`; decomposes the text (NFKD) and drops what is still not
printable ASCII or a newline ({lost}); collapses runs of spaces, trims lines, removes spaces
before punctuation and keeps at most one blank line in a row. Chapters and books are a blank
line apart. The file holds {kept}, written with gzip (level 9, zero timestamp: the same package
gives the same bytes)."""
    return f"""# Character-level text corpus

`{NAME}.txt.gz` is the English prose of the character-level language-modelling comparison of the
2023 chapter, read by `ssm.data.text`. It ships in the repository (and in the wheel, as package
data) because nothing may be downloaded at run time.

## Source

- Text: the **World English Bible** (WEB), 2020 stable text, a modern-English translation by
  eBible.org and its contributors: the 66 books from Genesis to Malachi and from Matthew to
  Revelation (1,189 chapters), mostly narrative prose, with the poetry of the Psalms and the
  prophets and the letters of the New Testament.
- Package: Debian's `{PACKAGE}`, version `{VERSION}` (section main), SWORD module `{MODULE}`
  (module version 426.0, 2022-12-28), which `apt-get install {PACKAGE}` puts in
  `/usr/share/sword`.

## Licence: public domain

The text is in the public domain. The package's copyright file
(`/usr/share/doc/{PACKAGE}/copyright`, `License: public-domain`) and the module's
configuration (`Copyright=PUBLIC DOMAIN`, `DistributionLicense=Public Domain`) both say so;
the notice, as the copyright file gives it:

> The World English Bible is in the Public Domain. That means that it is not copyrighted.
>
> However, "World English Bible" is a Trademark of eBible.org. You may copy, publish, proclaim,
> distribute, redistribute, sell, give away, quote, memorize, read publicly, broadcast,
> transmit, share, back up, post on the Internet, print, reproduce, preach, teach from, and use
> the World English Bible as much as you want, and others may also do so. All we ask is that if
> you CHANGE the actual text of the World English Bible in any way, you not call the result the
> World English Bible any more. This is to avoid confusion, not to limit your freedom. The Holy
> Bible is God's Word. It belongs to God. He gave it to us freely, and we who have worked on
> this translation freely give it to you by dedicating it to the Public Domain.

The cleaning below changes the text (markup, footnotes, punctuation), so, as asked, this file is
not itself "the World English Bible": it is a plain-ASCII training text derived from it.

## Cleaning

{_wrap(cleaning)}

## Sizes

| | |
| --- | --- |
| cleaned text | {full_chars:,} characters |
| `{NAME}.txt.gz`, uncompressed | {len(text):,} bytes (ASCII: one byte a character), \
{text.count(chr(10)):,} lines |
| `{NAME}.txt.gz`, compressed | {len(gz):,} bytes |
| SHA-256 of the uncompressed text | `{hashlib.sha256(text.encode()).hexdigest()}` |
| distinct characters (the vocabulary) | {len(vocab)}: the newline and `{printable}` |

## Regenerate

```
apt-get install {PACKAGE}
python scripts/make_text_corpus.py
```

or, without installing the package:

```
apt-get download {PACKAGE}
dpkg-deb -x {PACKAGE}_{VERSION}_all.deb root
python scripts/make_text_corpus.py --sword root/usr/share/sword
```
"""


def _wrap(paragraph: str) -> str:
    return textwrap.fill(" ".join(paragraph.split()), width=96)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sword",
        type=Path,
        default=Path("/usr/share/sword"),
        help="the SWORD library root holding mods.d and modules (default: %(default)s)",
    )
    parser.add_argument(
        "--max-chars", type=int, default=None, help="keep at most this many characters"
    )
    args = parser.parse_args()
    module_dir = args.sword / "modules" / "texts" / "ztext" / MODULE
    if not module_dir.is_dir():
        raise SystemExit(f"no {module_dir}: run `apt-get install {PACKAGE}` (see the docstring)")
    full, dropped = corpus(module_dir)
    text = full if args.max_chars is None else truncate(full, args.max_chars)
    gz = gzip.compress(text.encode("ascii"), compresslevel=9, mtime=0)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{NAME}.txt.gz").write_bytes(gz)
    (OUT_DIR / "README.md").write_text(readme(text, gz, len(full), dropped))
    print(
        f"{len(full):,} characters cleaned ({sum(dropped.values())} non-ASCII dropped); wrote "
        f"{len(text):,} characters, {len(gz):,} bytes of gzip, {len(set(text))} distinct"
    )


if __name__ == "__main__":
    main()
