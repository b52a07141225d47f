"""LaTeX from report blocks: a preamble-free file to ``\\input`` into a paper.

It needs only ``booktabs`` (table rules) and ``graphicx`` (figures, and ``\\resizebox`` for wide
tables); the first line of the file says so. Ties are underlined with ``\\underline`` (no extra
package). The output is plain ASCII: LaTeX specials are escaped and every non-ASCII character is
mapped to a LaTeX command (en/em dash, ±, accents, Greek letters, ...), so it compiles with
pdflatex whatever the input encoding. Tables are ``table`` floats (booktabs rules, first column
left-aligned, the best value of each column bold and the values whose interval overlaps it
underlined, a caption that says what the interval is); figures are ``figure`` floats of the PNG
written beside the file. Floats stay in their section: before each section heading, and at the
end, ``\\benchfloatbarrier`` (placeins' ``\\FloatBarrier`` without the package, defined by the
file) puts the floats still waiting on pages of their own before what follows.
"""

from __future__ import annotations

import re
import unicodedata

from bench.report.blocks import (Document, Figure, Heading, Table, Text, Value, better_words,
                                 format_value, interval_words, shown)

#: tables with more columns than this are set in \small (every table is shrunk to the line width
#: if wider)
WIDE_COLUMNS = 6

_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
             "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
             "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
             "`": r"\textasciigrave{}"}

#: non-ASCII characters with a LaTeX spelling (accented letters are composed from their parts)
_UNICODE = {
    "\u2013": "--", "\u2014": "---", "\u2212": "$-$", "\u00b1": r"$\pm$", "\u2213": r"$\mp$",
    "\u00d7": r"$\times$", "\u00b7": r"$\cdot$", "\u2026": r"\ldots{}", "\u2248": r"$\approx$",
    "\u2264": r"$\leq$", "\u2265": r"$\geq$", "\u2260": r"$\neq$", "\u2192": r"$\rightarrow$",
    "\u2190": r"$\leftarrow$", "\u221e": r"$\infty$", "\u00b0": r"$^\circ$", "\u2022": r"$\bullet$",
    "\u2018": "`", "\u2019": "'", "\u201c": "``", "\u201d": "''", "\u00a0": "~",
    "\u2009": r"\,", "\u202f": r"\,", "\u00df": r"{\ss}", "\u00e6": r"{\ae}", "\u00c6": r"{\AE}",
    "\u00f8": r"{\o}", "\u00d8": r"{\O}", "\u0153": r"{\oe}", "\u0152": r"{\OE}",
    "\u00e5": r"{\aa}", "\u00c5": r"{\AA}", "\u0131": r"{\i}", "\u00b5": r"$\mu$",
    "\u00a7": r"\S{}", "\u00b6": r"\P{}", "\u00a9": r"\copyright{}", "\u2032": "$'$",
}
#: combining accents -> the LaTeX accent command (for letters NFD splits into letter + accent)
_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"',
            "\u0304": "=", "\u0307": ".", "\u030a": "r", "\u0306": "u", "\u030c": "v",
            "\u030b": "H", "\u0327": "c", "\u0328": "k"}
#: combining accents on a math letter (a Greek letter written $\beta$) -> the math accent
_MATH_ACCENTS = {"\u0303": "tilde", "\u0302": "hat", "\u0304": "bar", "\u0307": "dot",
                 "\u0308": "ddot"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
          "lamda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi",
          "omega"}
_GREEK_UPPER = {"gamma", "delta", "theta", "lamda", "xi", "pi", "sigma", "upsilon", "phi", "psi",
                "omega"}


def _unicode(ch: str) -> str:
    """One non-ASCII character as LaTeX (ASCII only)."""
    if ch in _UNICODE:
        return _UNICODE[ch]
    parts = unicodedata.normalize("NFD", ch)
    if len(parts) >= 2 and parts[0].isascii() and parts[0].isalpha() \
            and all(p in _ACCENTS for p in parts[1:]):
        out = parts[0] if parts[0] not in "ij" else "\\" + parts[0]
        for accent in parts[1:]:
            cmd = _ACCENTS[accent]
            out = f"\\{cmd}{{{out}}}"
        return out
    name = unicodedata.name(ch, "")
    m = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER (\w+)", name)
    if m and m.group(2).lower() in _GREEK:
        g = m.group(2).lower()
        g = "lambda" if g == "lamda" else g
        if m.group(1) == "SMALL":
            return f"$\\{g}$"
        if m.group(2).lower() in _GREEK_UPPER:
            return f"$\\{g.capitalize()}$"
        return {"alpha": "A", "beta": "B", "epsilon": "E", "zeta": "Z", "eta": "H", "iota": "I",
                "kappa": "K", "mu": "M", "nu": "N", "rho": "P", "tau": "T", "chi": "X"}.get(g, "?")
    ascii_form = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    if ascii_form and ascii_form.isprintable():  # e.g. ligatures, full-width letters, superscripts
        return escape(ascii_form)
    return f"[U+{ord(ch):04X}]"  # no LaTeX spelling known: name the code point, still compiles


def escape(s: str) -> str:
    """Plain text as LaTeX: specials escaped, non-ASCII mapped, '--' kept as two hyphens."""
    out: list[str] = []
    for ch in str(s):
        if ch in _SPECIALS:
            piece = _SPECIALS[ch]
        elif ch.isascii():
            piece = ch if ch.isprintable() else " "
        elif ch in _MATH_ACCENTS and out and re.fullmatch(r"\$\\[A-Za-z]+\$", out[-1]):
            out[-1] = f"$\\{_MATH_ACCENTS[ch]}{{{out[-1][1:-1]}}}$"  # β̃ -> $\tilde{\beta}$
            continue
        else:
            piece = _unicode(ch)
        if piece.startswith("-") and out and out[-1].endswith("-"):
            piece = "{}" + piece  # no dash ligature across pieces: '--ci' stays two hyphens
        out.append(piece)
    return "".join(out)


def breakable(s: str, every: int = 16) -> str:
    """``escape(s)`` with a break point allowed every ``every`` characters of long words (hashes,
    run ids), so a line of them does not run into the margin."""
    pieces = re.split(rf"([A-Za-z0-9]{{{every}}})(?=[A-Za-z0-9])", str(s))
    return "".join(escape(p) + (r"\allowbreak{}" if i % 2 else "") for i, p in enumerate(pieces))


#: in typewriter type these are the font's own ASCII glyphs (OT1 and T1 alike), not the text
#: fonts' stand-ins (math braces, a rule for '_'); a space is a plain one (no wider gap after ':')
_CODE = {"{": r"{\char123}", "}": r"{\char125}", "_": r"{\char95}", "\\": r"{\char92}",
         "~": r"{\char126}", "^": r"{\char94}", "<": r"{\char60}", ">": r"{\char62}",
         "|": r"{\char124}", " ": "\\ "}


def code(s: str) -> str:
    """``s`` as the body of a \\texttt{}: ``escape`` but with typewriter glyphs for ``_CODE``."""
    pieces = re.split(r"([{}_\\~^<>| ])", str(s))
    return "".join(_CODE[p] if i % 2 else escape(p) for i, p in enumerate(pieces))


def inline(s: str) -> str:
    """Text with ``code`` spans (between backticks) as \\texttt{}; an unmatched backtick is kept."""
    parts = str(s).split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1 and i < len(parts) - 1:
            out.append(r"\texttt{" + code(part) + "}")
        elif i % 2 == 1:  # the text after an unmatched backtick
            out.append(r"\textasciigrave{}" + escape(part))
        else:
            out.append(escape(part))
    return "".join(out)


def label(prefix: str, key: str, used: set[str]) -> str:
    """``prefix:key`` with only letters, digits, '-', '.' and ':' (unique within the file)."""
    base = f"{prefix}:" + (re.sub(r"[^A-Za-z0-9.:-]+", "-", key).strip("-") or "block")
    name, n = base, 2
    while name in used:
        name, n = f"{base}-{n}", n + 1
    used.add(name)
    return name


def cell_tex(c: object, style: str) -> str:
    if not isinstance(c, Value):
        return escape(str(c))
    txt = escape(format_value(c, style))
    return {"best": rf"\textbf{{{txt}}}", "tie": rf"\underline{{{txt}}}"}.get(c.mark, txt)


_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$|^(NaN|-?inf|\u2013|-)$")


def _align(t: Table, j: int) -> str:
    """'l' for the first column and for text columns; 'r' for columns of values and numbers."""
    if j == 0:
        return "l"
    cells = [r[j] for r in t.rows if j < len(r)]
    numeric = cells and all(isinstance(c, Value) or _NUMBER.match(str(c).strip()) for c in cells)
    return "r" if numeric else "l"


def caption_tex(t: Table, style: str) -> str:
    parts = []
    if t.caption:
        parts.append(inline(t.caption.rstrip(".") + "."))
    if any(isinstance(c, Value) for r in t.rows for c in r):
        parts.append(escape(f"Cells: {interval_words(style)}."))
    words = better_words(t)
    if words:
        parts.append(f"Bold: best in its column ({escape(words)}); underlined: interval overlaps "
                     f"the best.")
    return " ".join(parts)


def table_tex(t: Table, style: str = "brackets", used: set[str] | None = None) -> str:
    """One booktabs ``table`` float (caption above, as booktabs advises)."""
    ncol = len(t.columns)
    spec = "".join(_align(t, j) for j in range(ncol))
    body = [rf"\begin{{tabular}}{{@{{}}{spec}@{{}}}}", r"\toprule",
            " & ".join(escape(c) for c in t.columns) + r" \\", r"\midrule"]
    for r in t.rows:
        cells = [cell_tex(c, style) for c in r] + [""] * (ncol - len(r))
        body.append(" & ".join(cells[:ncol]) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}"]
    out = [r"\begin{table}[htbp]", r"\centering"]
    cap = caption_tex(t, style)
    if cap:
        out.append(rf"\caption{{{cap}}}")
    out += [rf"\label{{{label('tab', t.key, used if used is not None else set())}}}",
            r"\smallskip"]  # article sets no space between a caption and what follows it
    if ncol > WIDE_COLUMNS:  # small type for many columns
        out.append(r"\small")
    # every table is shrunk to the line width if it is wider (values with intervals are long),
    # never enlarged
    out += [r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"]
    out += body
    out.append("}")
    out.append(r"\end{table}")
    return "\n".join(out)


def figure_tex(f: Figure, used: set[str]) -> str:
    return "\n".join([r"\begin{figure}[htbp]", r"\centering",
                      rf"\includegraphics[width=\linewidth]{{{f.path.name}}}",
                      rf"\caption{{{inline(f.caption)}}}",
                      rf"\label{{{label('fig', f.path.stem, used)}}}", r"\end{figure}"])


_SECTION = {1: "section", 2: "subsection", 3: "subsubsection"}

#: if floats are still waiting (deferred, or held for the bottom of this page), \clearpage
#: places them now; else nothing (placeins' \FloatBarrier, Arseneau 1995)
FLOAT_BARRIER = [r"\makeatletter",
                 r"\providecommand\benchfloatbarrier{\par\begingroup\let\@elt\relax",
                 r"  \edef\@tempa{\@botlist\@deferlist\@dbldeferlist}%",
                 r"  \ifx\@tempa\@empty\endgroup\else\endgroup\clearpage\fi}",
                 r"\makeatother"]


def render_latex(doc: Document, style: str = "brackets") -> str:
    out = [r"% Needs \usepackage{booktabs,graphicx}; \input this file into a document.",
           r"% Figures are PNG files beside this file; \input from another folder needs "
           r"\graphicspath{{<this folder>/}}.",
           *FLOAT_BARRIER, rf"\section*{{{escape(doc.title)}}}", ""]
    if doc.provenance:  # ragged right, long hashes breakable: no overfull lines
        out += [r"\begin{flushleft}\small", "; ".join(
            rf"{escape(k)}: {breakable(v)}" for k, v in doc.provenance.items()) + ".",
            r"\end{flushleft}", ""]
    used: set[str] = set()
    for b in doc.blocks:
        if not shown(b, "latex"):
            continue
        if isinstance(b, Heading):
            cmd = _SECTION.get(b.level, "paragraph")
            if b.level <= 2:  # the previous section's floats go before this one
                out.append(r"\benchfloatbarrier")
            out += [rf"\{cmd}*{{{inline(b.text)}}}", ""]
        elif isinstance(b, Text):
            text = inline(b.text)
            if "\\ " in text:  # code with spaces, which do not stretch: ragged right, no overfull
                text = r"{\rightskip=0pt plus 1fil\relax " + text + r"\par}"
            out += [text, ""]
        elif isinstance(b, Table):
            out += [table_tex(b, style, used), ""]
        elif isinstance(b, Figure):
            out += [figure_tex(b, used), ""]
    out.append(r"\benchfloatbarrier")  # what follows the \input comes after the report's floats
    return "\n".join(out)
