"""Render reports from a results folder: Markdown, self-contained HTML and LaTeX tables, with
PNG figures. Each eval kind contributes its own sections (``Eval.report_sections``,
``bench.report.sections``) as format-neutral blocks (``bench.report.blocks``); the renderers
(``render_md``, ``render_html``, ``render_latex``) only lay them out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.store import ROW_KEY
from bench.report.tables import fmt


#: the row columns a report reads (every file the store writes has them all, ``ROW_SCHEMA``)
REPORT_COLUMNS = ROW_KEY + ["value", "ci_low", "ci_high", "n_samples", "model_name", "model_params",
                            "sampler_name", "sampler_params", "eval_params", "seed", "nfe_counted",
                            "wall_s", "model_s", "samples_per_s", "run_id", "config_hash",
                            "git_revision", "torch_version", "device", "code_hash", "created_at"]
#: the row columns ``latest_rows`` and ``bench compare`` need
COMPARE_COLUMNS = ROW_KEY + ["value", "ci_low", "ci_high", "created_at"]


def read_rows(path: str | Path, what: str, columns: list[str]) -> pd.DataFrame:
    """Result rows from an existing Parquet file or folder, checked: readable, not empty, with
    ``columns``, a numeric ``value``. ``what`` names the argument in the error message."""
    path = Path(path)
    fix = (f"give a results folder written by 'bench run --results DIR' (or one Parquet file "
           f"of it, DIR/<suite>/<cell>.parquet)")
    unsigned = check_digests(path, what)
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # not Parquet, truncated, unreadable
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BenchError(f"{what} '{path}' is not readable as result rows (Parquet): "
                         f"{type(exc).__name__}: {first}; {fix}.") from None
    if not len(df.columns) or (df.empty and path.is_dir()):
        raise BenchError(f"{what} '{path}' has no result rows"
                         f"{' (the folder is empty)' if path.is_dir() and not any(path.iterdir()) else ''}"
                         f"; run a suite into it first ('bench run SUITE --results {path}'), or "
                         f"{fix}.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise BenchError(f"{what} '{path}' is Parquet but not result rows: it lacks the column(s) "
                         f"{shown}{_foreign_files(path, columns)}; {fix}.")
    if df.empty:
        raise BenchError(f"{what} '{path}' has no result rows (0 rows); {fix}.")
    keyless = df[["suite", "model", "sampler", "nfe", "eval", "metric"]].isna().any(axis=1)
    if keyless.any():  # a folder read as one table: a foreign file's rows have null keys
        raise BenchError(f"{what} '{path}': {int(keyless.sum())} row(s) have no suite, model, "
                         f"sampler, NFE, eval or metric{_foreign_files(path, columns)}; remove "
                         f"what is not a result file from the folder, or {fix}.")
    if not pd.api.types.is_numeric_dtype(df["value"]):
        raise BenchError(f"{what} '{path}': column 'value' holds {df['value'].dtype} data, not "
                         f"numbers; {fix}.")
    if unsigned:
        import sys

        print(f"warning: {len(unsigned)} result file(s) in '{path}' carry no content digest "
              f"(written by an older bench, or edited by hand), so they cannot be verified: "
              f"{', '.join(unsigned[:3])}{' ...' if len(unsigned) > 3 else ''}", file=sys.stderr)
    return df


def check_digests(path: Path, what: str) -> list[str]:
    """Refuse result files whose content no longer matches the digest bench wrote with them
    (``bench.integrity``); return those without one (an older bench, or edited by hand: read,
    with a warning). Unreadable files are left to ``read_rows``, which names them."""
    from bench.integrity import CorruptFile, read_table

    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in f.relative_to(path).parts))
    unsigned = []
    for f in files:
        try:
            read_table(f)
        except CorruptFile as exc:
            if "no content digest" in exc.reason:
                unsigned.append(str(f))
            elif "does not match its digest" in exc.reason:
                raise BenchError(f"{what} '{path}': result file '{f}' is corrupt ({exc.reason}); "
                                 f"rerun its suite with --results {path} (the file is moved "
                                 f"aside and rewritten), or remove it.") from None
        except Exception:
            pass  # not Parquet at all: read_rows names it
    return unsigned


def _foreign_files(path: Path, columns: list[str]) -> str:
    """' (from FILE, ...)': the Parquet files under ``path`` that lack some of ``columns``."""
    import pyarrow.parquet as pq

    if not path.is_dir():
        return ""
    bad = []
    for f in sorted(path.rglob("*.parquet")):
        if any(part.startswith(("_", ".")) for part in f.relative_to(path).parts):
            continue  # pyarrow skips these too
        try:
            names = set(pq.read_schema(f).names)
        except Exception:
            names = set()
        if not set(columns) <= names:
            bad.append(str(f))
    return f" (from {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})" if bad else ""


def load_results(results: str | Path, suite: str | None = None) -> pd.DataFrame:
    path = Path(results)
    if not path.exists():
        raise BenchError(f"results folder '{path}' does not exist; run 'bench run SUITE "
                         f"--results {path}' first, or pass the folder it wrote.")
    df = read_rows(path, "results folder" if path.is_dir() else "results file", REPORT_COLUMNS)
    if suite:
        known = sorted(df["suite"].astype(str).unique())
        df = df[df["suite"] == suite]
        if df.empty:
            raise BenchError(f"--suite: no rows for suite {suite!r} in '{path}'; drop --suite or "
                             f"use one of: {', '.join(known)}.")
    return latest_rows(df)


def latest_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the newest row of each key (``bench.store.ROW_KEY``: suite, model, sampler, NFE,
    eval, slice, step, metric).

    A suite rerun after its code or settings changed (another ``config_hash``) writes new rows
    beside the old ones; a report shows the newest and says how many it left out
    (``df.attrs['superseded']``: suite -> rows left out).
    """
    when = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")
    order = df.assign(_when=when).sort_values("_when", kind="stable").drop(columns="_when")
    newest = order.drop_duplicates(ROW_KEY, keep="last").sort_index()
    dropped = df["suite"].value_counts().sub(newest["suite"].value_counts(), fill_value=0)
    newest.attrs["superseded"] = {str(k): int(v) for k, v in dropped.items() if v}
    return newest


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def suite_report_options(results: str | Path, suite: str) -> dict:
    """The ``report:`` block of the newest run of this suite in the results folder."""
    import json

    runs = sorted((Path(results) / "_runs").glob("*.json"))
    for p in reversed(runs):
        try:
            m = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, ValueError):  # unreadable: 'bench status' says so
            continue
        if isinstance(m, dict) and m.get("suite") == suite:
            return dict(m.get("report")) if isinstance(m.get("report"), dict) else {}
    return {}


def _fit_min_nfe(options: dict, results: str | Path, suite: str) -> int:
    """The suite's ``report: {fit_min_nfe: N}`` (``options``, as its newest run in ``results``
    recorded them; 0 if unset)."""
    v = options.get("fit_min_nfe", 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BenchError(f"suite {suite!r}: field 'report.fit_min_nfe' is {v!r} in its newest run "
                         f"in '{results}'; pass --fit-min-nfe N (a whole number >= 0) to override "
                         f"it, and fix the suite's 'report: {{fit_min_nfe: N}}'.")
    return v


#: output formats of ``bench report`` (file suffix, renderer "module:function")
FORMATS = {"md": (".md", "bench.report.render_md:render_md"),
           "html": (".html", "bench.report.render_html:render_html"),
           "latex": (".tex", "bench.report.render_latex:render_latex")}


def parse_formats(spec: str | list[str] | None) -> list[str]:
    names = FORMATS if spec is None else (spec.split(",") if isinstance(spec, str) else spec)
    out = [f.strip() for f in names if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise BenchError(f"--format {','.join(out) or spec!r}: unknown format(s) {bad}; use a "
                         f"comma-separated list of {', '.join(FORMATS)} (default: all).")
    return out


def renderer(fmt_name: str):
    import importlib

    module, attr = FORMATS[fmt_name][1].split(":")
    return getattr(importlib.import_module(module), attr)


def section_builder(eval_name: str):
    """The function that renders an eval's rows: the eval class names it (``report_sections``)."""
    import importlib

    from bench.registry import EVALS

    target = getattr(EVALS.get(eval_name), "report_sections", "bench.report.sections:sampled_sections")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def suite_document(sdf: pd.DataFrame, ctx, superseded: int = 0):
    """One suite's report as blocks: the provenance header, then each eval's sections (in eval
    name order), then the sample galleries."""
    from bench.report.blocks import Document, Text
    from bench.report.sections import gallery_sections, provenance

    doc = Document(f"Report: {ctx.suite}", provenance(sdf))
    if superseded:
        doc.blocks.append(Text(f"{superseded} older row(s) of the same cells (an earlier run with "
                               "other code or settings) are left out; the newest row of each cell "
                               "is shown."))
    for eval_name, edf in sdf.groupby("eval", sort=True):
        doc.blocks += section_builder(str(eval_name))(edf, ctx)
    doc.blocks += gallery_sections(ctx)
    return doc


def render(results: str | Path, out: str | Path, suite: str | None = None,
           fit_min_nfe: int | None = None, formats: str | list[str] | None = None,
           ci_style: str = "brackets", table: str | tuple[str, str] | None = None) -> list[Path]:
    """Write ``out/<suite>.{md,html,tex}`` and the PNG figures; return the written paths.

    ``fit_min_nfe`` defaults to the suite's ``report: {fit_min_nfe: N}``, else 0. ``table``
    ('ROW,COL', ``sections.TABLE_AXES``) lays out the metrics' value tables; it defaults to the
    suite's ``report: {table: [ROW, COL]}``, else sampler x NFE per model.
    """
    from bench.registry import load_all
    from bench.report.blocks import CI_STYLES
    from bench.report.sections import ReportContext, parse_table

    load_all()
    fmts = parse_formats(formats)
    if ci_style not in CI_STYLES:
        raise BenchError(f"--ci {ci_style!r}: use one of {', '.join(CI_STYLES)}.")
    df = load_results(results, suite)
    options = {name: suite_report_options(results, name) for name in sorted(df["suite"].unique())}
    # checked before anything is written
    min_nfes = {name: fit_min_nfe if fit_min_nfe is not None else _fit_min_nfe(o, results, name)
                for name, o in options.items()}
    layouts = {name: parse_table(table if table is not None else o.get("table"))
               for name, o in options.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for suite_name, sdf in df.groupby("suite", sort=True):
        galleries = tuple(options[suite_name].get("galleries") or ())
        ctx = ReportContext(Path(results), out, str(suite_name), min_nfes[suite_name], _slug,
                            galleries, layouts[suite_name])
        doc = suite_document(sdf, ctx,
                             df.attrs.get("superseded", {}).get(suite_name, 0))
        figures = [b.path for b in doc.blocks if hasattr(b, "path")]
        for f in fmts:
            path = out / f"{_slug(str(suite_name))}{FORMATS[f][0]}"
            path.write_text(renderer(f)(doc, ci_style))
            written.append(path)
        written += figures
    return written


__all__ = ["render", "load_results", "latest_rows", "fmt", "FORMATS"]
