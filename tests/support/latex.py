"""Compile a generated ``.tex`` (preamble-free, to ``\\input``) with pdflatex, and check the PDF.

Test tooling: tests import it as ``support.latex``. pdflatex and booktabs come from Debian's
``texlive-latex-base`` and ``texlive-latex-recommended``, pdftoppm from ``poppler-utils``
(ghostscript's ``gs`` is used instead where it is installed and pdftoppm is not); both are
installed with apt-get when missing (``support.debian.ensure_packages``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.debian import ensure_packages, which

TEX_PACKAGES = ["texlive-latex-base", "texlive-latex-recommended"]
#: what a file of ``bench.report.render_latex`` needs (its first line says so)
PREAMBLE = r"\documentclass{article}\usepackage{booktabs,graphicx}"


def _has_booktabs() -> bool:
    kpse = which("kpsewhich")
    return bool(kpse) and subprocess.run([kpse, "booktabs.sty"], capture_output=True,
                                         text=True).stdout.strip() != ""


def pdflatex_reason() -> str | None:
    """None when pdflatex with booktabs is usable (installed if needed), else the skip reason."""
    return ensure_packages(["pdflatex", "kpsewhich"], TEX_PACKAGES, present=_has_booktabs)


def rasterizer_reason() -> str | None:
    """None when a PDF can be turned into PNG here (pdftoppm, else gs), else the skip reason."""
    if which("pdftoppm") or which("gs"):
        return None
    return ensure_packages("pdftoppm", "poppler-utils")


def pdftotext_reason() -> str | None:
    """None when ``pdftotext`` (poppler) is usable (installed if needed), else the skip reason."""
    return ensure_packages("pdftotext", "poppler-utils")


def pdf_text(pdf: Path) -> str:
    """The PDF's text in page order (``pdftotext``); pages are separated by form feeds."""
    return subprocess.run([which("pdftotext"), str(pdf), "-"], check=True, capture_output=True,
                          text=True, errors="replace", timeout=120).stdout


def compile_input(folder: Path, tex_name: str,
                  main: str = "main") -> tuple[subprocess.CompletedProcess, Path]:
    """Write ``folder/<main>.tex`` = a minimal article that ``\\input``s ``tex_name`` and run
    ``pdflatex -interaction=nonstopmode -halt-on-error`` on it in ``folder`` (where the figures
    are). Returns the process (its stdout is the LaTeX log) and the PDF's path."""
    folder = Path(folder)
    (folder / f"{main}.tex").write_text(
        PREAMBLE + "\n\\begin{document}\n\\input{" + tex_name + "}\n\\end{document}\n")
    r = subprocess.run([which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error",
                        f"{main}.tex"], cwd=folder, capture_output=True, text=True,
                       errors="replace", timeout=300)
    return r, folder / f"{main}.pdf"


def log_errors(r: subprocess.CompletedProcess) -> str:
    """The '!' error lines of a pdflatex run with what follows them (for assertion messages)."""
    lines = r.stdout.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith("!")]
    return "\n".join("\n".join(lines[i:i + 4]) for i in hits[:3]) or r.stdout[-1500:]


def first_page_png(pdf: Path, png: Path, dpi: int = 72) -> Path:
    """Page 1 of ``pdf`` as ``png`` (pdftoppm, else ghostscript)."""
    png = Path(png)
    if which("pdftoppm"):
        subprocess.run([which("pdftoppm"), "-png", "-r", str(dpi), "-f", "1", "-l", "1",
                        "-singlefile", str(pdf), str(png.with_suffix(""))], check=True,
                       capture_output=True, timeout=120)
    else:
        subprocess.run([which("gs"), "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=png16m",
                        f"-r{dpi}", "-dFirstPage=1", "-dLastPage=1", f"-sOutputFile={png}",
                        str(pdf)], check=True, capture_output=True, timeout=120)
    return png


def is_blank(png: Path) -> bool:
    """Whether every pixel of the image has the same colour."""
    from PIL import Image

    with Image.open(png) as im:
        return all(lo == hi for lo, hi in im.convert("RGB").getextrema())
