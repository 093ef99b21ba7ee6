"""Names are data: how a file name, a URL or a group name is shown, printed and exported safely.

File names may hold anything a file system allows: bytes that are not UTF-8 (kept in `str` as
lone surrogates by `os.fsdecode`), newlines, control characters, markup. They are stored as
they are and escaped only where they are shown, so that one name is always one line of text,
never markup, and never a spreadsheet formula.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata

# OWASP's CSV-injection rule: a cell starting with one of these is a formula in Excel,
# LibreOffice and Google Sheets; a leading apostrophe makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def one_line(text) -> str:
    """`text` as one printable line: undecodable bytes as \\xNN, control characters as \\n, \\t, \\x1b ..."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # any other lone surrogate cannot be encoded either
            out.append(f"\\u{code:04x}")
        elif ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(repr(ch)[1:-1] if code < 0x80 else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[ntr])")
NAMED = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def from_one_line(text: str) -> str:
    """The text `one_line` was given back from what it printed: `\\xNN` of 0x80 and over is the undecodable
    byte again (a surrogate, as os.fsdecode keeps it), below it the control character; other backslashes stay."""
    def back(match) -> str:
        code = match.group(1)
        if code in NAMED:
            return NAMED[code]
        number = int(code[1:], 16)
        return chr(0xDC00 + number) if code[0] == "x" and number >= 0x80 else chr(number)

    return ESCAPED.sub(back, text)


def relative_paths(text, folders) -> str:
    """`text` with the server's folders cut from the paths in it: what a dashboard visitor may see of its files.

    A path under one of `folders` becomes relative to it (`/srv/photos/cats/a.jpg` -> `cats/a.jpg`)
    and the folder itself its name, as typed or resolved, raw or as `one_line` escapes it; the
    longest folder first, so a model folder inside the collection is cut as itself.
    """
    cut = {}
    for folder in folders:
        if not folder:
            continue
        given = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        for path in (given, os.path.realpath(given)):
            if path != os.sep:
                cut[path] = os.path.basename(path)
                cut[one_line(path)] = one_line(os.path.basename(path))
    text = str(text)
    for path in sorted(cut, key=len, reverse=True):
        text = text.replace(path + os.sep, "").replace(path, cut[path])
    return text


def path_in_collection(path, root) -> str:
    """A collection file's path relative to the folder the version was made from (`root`); its name alone when
    it lies elsewhere or no folder is known: what a visitor or a program on another machine sees of a file."""
    from pathlib import PurePath

    try:
        return str(PurePath(path).relative_to(root)) if root else PurePath(path).name
    except ValueError:
        return PurePath(path).name


def csv_cell(value) -> str | int | float:
    """A value made safe for a spreadsheet: one line, and text rather than a formula.

    The guard is an apostrophe before a cell that starts with a formula character, after any
    apostrophes of its own (so `'=x` becomes `''=x`): `csv_uncell` then takes exactly the guard
    away, and a cell such as `'90s` is left as it is both ways.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = one_line("" if value is None else value)
    return "'" + text if text.lstrip("'").startswith(FORMULA_STARTS) else text


def csv_uncell(text: str) -> str:
    """A cell as it was before `csv_cell`'s guard: one leading apostrophe removed where the guard put it, no more."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(FORMULA_STARTS) else text


def csv_text(header: list[str], rows) -> str:
    """CSV (UTF-8 text, `\\n` line ends) with every cell passed through `csv_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return out.getvalue()


def write_csv(path, header: list[str], rows) -> None:
    """Write `csv_text` to a file as UTF-8."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(csv_text(header, rows))


MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()#+-.!|<>~$:&=^\"'")
# GitHub's Markdown (Streamlit's) makes links of bare URLs (http://…, https://…, www.…) and e-mail addresses
# after parsing, when the backslash escapes are gone already: an invisible word joiner (U+2060) inside each
# pattern is what stops it (seen in a real browser: a label "http://x.example" became a link).
AUTOLINKS = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\\\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def markdown_text(text) -> str:
    """`text` for a place that renders Markdown (Streamlit captions, labels, options): shown as typed, never markup.

    CommonMark lets any ASCII punctuation be escaped with a backslash; escaping all of the ones
    Markdown, its HTML, links and images, Streamlit's `:colour[...]` directives, emoji shortcodes
    and `$` maths use leaves nothing for the renderer to interpret; a word joiner inside every
    `://`, `www.` and `@` leaves no bare URL or address to link.
    """
    escaped = "".join("\\" + ch if ch in MARKDOWN_SPECIAL else ch for ch in one_line(text))
    return AUTOLINKS.sub(WORD_JOINER, escaped)


def html_text(text) -> str:
    """`text` for Plotly's labels, legends and hover boxes, which read a subset of HTML (<a href>, <b>, <br>).

    Quotes stay as typed: with `<` escaped no tag (so no attribute) can form, and Plotly does not
    decode `&quot;`, which it would show literally (seen in a real browser on the Explore legend).
    """
    import html

    return html.escape(one_line(text), quote=False)
