"""``bench leaderboard``: rank (suite, model, sampler) entries of one metric at one NFE across
results folders, and write the ranking as Markdown, HTML and LaTeX.

Rows are read with the same checks as ``bench report`` and ``bench compare`` (``read_rows``), from
every folder or file given together, and the newest row of each cell is kept (``latest_rows``:
a cell present in two inputs counts once, with its newest row). Then the rows of the metric at
the requested NFE (and ``step``, if given) of one slice (and, with ``--samples N``, of one
sample count) are ranked. The table shows each entry's number of samples: a metric estimated
from N samples can depend on N (FID is biased upwards at small N), so the text says so when the
entries differ in it.

Ranking rule (``rank_rows``): the entries are sorted best first by the metric's declared
direction (``Metric.outputs``; a metric without one is refused), equal values in (suite, model,
sampler) order. The first entry leads rank group 1. Walking down the list, an entry whose
interval overlaps the interval of the leader of the current rank group (``blocks.overlaps``; a
value without an interval is a point) gets that group's rank; the first entry that does not
overlap leads a new group, whose rank is its position in the list (competition ranking:
1, 1, 3, ...). Only the current leader counts, so an entry can share rank 2 with a leader it
overlaps while its (wide) interval also reaches the rank-1 leader. Entries whose value is not
finite (NaN, inf) are listed last without a rank.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.report.blocks import Document, Table, Text, Value, finite, mark_best, overlaps

#: the row columns a leaderboard reads
LEADERBOARD_COLUMNS = ["suite", "model", "sampler", "nfe", "eval", "slice", "step", "metric",
                       "value", "ci_low", "ci_high", "nfe_counted", "n_samples", "created_at"]

RULE = ("Entries are sorted best first; the first leads rank group 1, and each next entry whose "
        "interval overlaps the interval of its group's leader shares that rank; the first entry "
        "that does not overlap leads a new group, ranked by its position in the list (1, 1, 3, "
        "...). Values that are not finite are listed last, unranked.")


@dataclass
class Entry:
    suite: str
    model: str
    sampler: str
    nfe: int
    nfe_counted: int
    value: Value
    samples: int | None = None
    rank: int | None = None


def parse_at(spec: str) -> dict[str, int]:
    """``nfe=N`` or ``nfe=N,step=K`` -> {'nfe': N, 'step': K}; N > 0 and K >= 0 whole numbers."""
    fix = "write --at nfe=N (N the requested NFE, a whole number > 0), or --at nfe=N,step=K"
    out: dict[str, int] = {}
    for part in str(spec).split(","):
        key, eq, val = part.strip().partition("=")
        key = key.strip()
        if not eq or key not in ("nfe", "step") or key in out:
            raise BenchError(f"--at {spec!r}: {'repeats' if key in out else 'cannot read'} "
                             f"{part.strip()!r}; {fix}.")
        try:
            n = int(val.strip())
        except ValueError:
            raise BenchError(f"--at {spec!r}: {key} = {val.strip()!r} is not a whole number; "
                             f"{fix}.") from None
        if n < (1 if key == "nfe" else 0):
            raise BenchError(f"--at {spec!r}: {key} must be {'> 0' if key == 'nfe' else '>= 0'}; "
                             f"{fix}.")
        out[key] = n
    if "nfe" not in out:
        raise BenchError(f"--at {spec!r}: no nfe; {fix}.")
    return out


def metric_direction(metric: str) -> bool:
    """The metric's direction (True: higher is better); a BenchError if it declares none."""
    from bench.metrics.base import find_output
    from bench.registry import EVALS, METRICS, load_all

    load_all()
    out = find_output(metric)
    if out is not None and out.higher_is_better is not None:
        return out.higher_is_better
    ranked = sorted({row for e in [*METRICS, *EVALS]
                     for row, o in getattr(e.load(), "outputs", {}).items()
                     if o.higher_is_better is not None})
    why = ("no metric declares a row of that name" if out is None
           else "it declares no direction (higher or lower is better)")
    raise BenchError(f"--metric {metric!r}: cannot rank by it, {why}; use one of: "
                     f"{', '.join(ranked)} ('bench list metrics' shows each row's direction).")


def read_inputs(paths: list[str | Path]) -> pd.DataFrame:
    """The newest row of each cell across all the folders/files given (checked like 'report')."""
    from bench.report import latest_rows, read_rows

    frames = []
    for p in paths:
        p = Path(p)
        what = "RESULTS folder" if p.is_dir() else "RESULTS file"
        if not p.exists():
            raise BenchError(f"RESULTS '{p}' does not exist; pass a results folder written by "
                             f"'bench run SUITE --results DIR' (or one Parquet file of it).")
        frames.append(read_rows(p, what, LEADERBOARD_COLUMNS))
    return latest_rows(pd.concat(frames, ignore_index=True))


def select(df: pd.DataFrame, metric: str, at: dict[str, int], slice_: str,
           eval_: str | None = None, samples: int | None = None) -> pd.DataFrame:
    """The rows to rank (of one eval if ``eval_``, of one sample count if ``samples``); a
    BenchError naming the argument that left none, or that leaves an entry with more than one
    row."""
    def listed(col: str, d: pd.DataFrame) -> str:
        return ", ".join(str(v) for v in sorted(d[col].dropna().unique())) or "none"

    def narrow(d: pd.DataFrame, col: str, value: object, message: str) -> pd.DataFrame:
        """The rows of ``d`` whose ``col`` is ``value``; none: a BenchError, ``message`` then
        the values ``col`` has."""
        kept = d[d[col] == value]
        if kept.empty:
            raise BenchError(f"{message}: {listed(col, d)}.")
        return kept

    rows = narrow(df, "metric", metric, f"--metric {metric!r}: no rows of this metric in the "
                  f"results given; their metrics are")
    if eval_ is not None:
        rows = narrow(rows, "eval", eval_, f"--eval {eval_!r}: no {metric} rows of this eval; "
                      f"the evals with {metric} rows are")
    by_slice = narrow(rows, "slice", slice_, f"--slice {slice_!r}: no {metric} rows of this "
                      f"slice; the slices of {metric} are")
    sel = narrow(by_slice, "nfe", at["nfe"], f"--at nfe={at['nfe']}: no {metric} rows at this "
                 f"NFE (slice {slice_}); the requested NFEs of {metric} are")
    if "step" in at:
        sel = narrow(sel, "step", at["step"], f"--at step={at['step']}: no {metric} rows at NFE "
                     f"{at['nfe']} with this step; their steps are")
    if samples is not None:
        sel = narrow(sel, "n_samples", samples, f"--samples {samples}: no {metric} rows at NFE "
                     f"{at['nfe']} from this many samples; their sample counts are")
    dup = sel[sel.duplicated(["suite", "model", "sampler"], keep=False)]
    if len(dup):
        first = dup.iloc[0]
        same = dup[(dup["suite"] == first["suite"]) & (dup["model"] == first["model"])
                   & (dup["sampler"] == first["sampler"])]
        raise BenchError(f"--at nfe={at['nfe']}: entry {first['suite']}/{first['model']}/"
                         f"{first['sampler']} has {len(same)} {metric} rows at this NFE (evals "
                         f"{listed('eval', same)}; steps {listed('step', same)}); pick one with "
                         f"--eval NAME or --at nfe={at['nfe']},step=K.")
    return sel


def rank_rows(rows: pd.DataFrame, higher_is_better: bool) -> list[Entry]:
    """The entries of ``rows`` (one row each: suite, model, sampler, nfe, value, ci_low,
    ci_high, and optionally nfe_counted and n_samples) best first, ranked by the module's
    rule."""
    entries = []
    for _, r in rows.iterrows():
        n = int(r["nfe"])
        counted = r.get("nfe_counted", n)
        count = r.get("n_samples")
        entries.append(Entry(str(r["suite"]), str(r["model"]), str(r["sampler"]), n,
                             n if counted is None or pd.isna(counted) else int(counted),
                             Value(float(r["value"]), float(r["ci_low"]), float(r["ci_high"])),
                             None if count is None or pd.isna(count) else int(count)))
    sign = -1.0 if higher_is_better else 1.0
    good = sorted((e for e in entries if finite(e.value.value)),
                  key=lambda e: (sign * e.value.value, e.suite, e.model, e.sampler))
    bad = sorted((e for e in entries if not finite(e.value.value)),
                 key=lambda e: (e.suite, e.model, e.sampler))
    leader: Entry | None = None
    for pos, e in enumerate(good, start=1):
        if leader is not None and overlaps(e.value, leader.value):
            e.rank = leader.rank
        else:
            e.rank, leader = pos, e
    return good + bad


def leaderboard_document(entries: list[Entry], metric: str, at: dict[str, int], slice_: str,
                         sources: list[str], rows: pd.DataFrame) -> Document:
    from bench.report.sections import direction, interval_caption, provenance

    hib = direction(metric)
    where = f"NFE {at['nfe']}" + (f", step {at['step']}" if "step" in at else "")
    table_rows = []
    for e in entries:
        nfe = str(e.nfe) if e.nfe_counted == e.nfe else f"{e.nfe} (counted {e.nfe_counted})"
        table_rows.append(["–" if e.rank is None else str(e.rank), e.suite, e.model, e.sampler,
                           nfe, "–" if e.samples is None else str(e.samples), e.value])
    table = mark_best(Table(["rank", "suite", "model", "sampler", "NFE", "samples", "value"],
                            table_rows,
                            caption=interval_caption(metric), higher_is_better=hib,
                            key=f"leaderboard-{metric}-nfe{at['nfe']}"))
    prov = {"results": ", ".join(sources), **provenance(rows)}
    better = "higher" if hib else "lower"
    text = (f"{len(entries)} entries (suite, model, sampler) ranked by `{metric}` ({better} is "
            f"better) at requested {where}, slice `{slice_}`, the newest row of each cell across "
            f"the results given. {RULE}")
    counts = sorted({e.samples for e in entries if e.samples is not None})
    if len(counts) > 1:
        text += (f" The entries were computed from different numbers of samples "
                 f"({', '.join(f'{c:,}' for c in counts)}): an estimate from N samples can depend "
                 f"on N (FID is biased upwards at small N), so compare entries with equal counts "
                 f"(`--samples N` ranks one count only).")
    return Document(f"Leaderboard: {metric} at {where}", prov, [Text(text), table])


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def write_leaderboard(results: list[str | Path], metric: str, at: str, slice_: str = "all",
                      out: str | Path = "reports/leaderboard",
                      formats: str | list[str] | None = None,
                      ci_style: str = "brackets",
                      eval_: str | None = None,
                      samples: int | None = None) -> tuple[Document, list[Path]]:
    """Rank, then write ``out/leaderboard-<metric>-nfe<N>.{md,html,tex}``; return the document
    and the written paths. Every argument is checked before anything is written."""
    from bench.report import FORMATS, parse_formats, renderer
    from bench.report.blocks import CI_STYLES

    fmts = parse_formats(formats)
    if ci_style not in CI_STYLES:
        raise BenchError(f"--ci {ci_style!r}: use one of {', '.join(CI_STYLES)}.")
    render_fns = {}
    for f in fmts:
        try:
            render_fns[f] = renderer(f)
        except (ImportError, AttributeError) as exc:
            raise BenchError(f"--format {f}: its renderer ({FORMATS[f][1]}) is not available "
                             f"({type(exc).__name__}: {exc}); choose other formats, e.g. "
                             f"--format {','.join(x for x in FORMATS if x != f)}.") from None
    where = parse_at(at)
    hib = metric_direction(metric)
    if not results:
        raise BenchError("RESULTS: give at least one results folder or Parquet file.")
    if samples is not None and samples < 1:
        raise BenchError(f"--samples {samples}: a sample count is a whole number > 0; pass the "
                         f"n_samples of the rows to rank, or leave --samples out.")
    sel = select(read_inputs(results), metric, where, slice_, eval_, samples)
    entries = rank_rows(sel, hib)
    doc = leaderboard_document(entries, metric, where, slice_, [str(p) for p in results], sel)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"leaderboard-{_slug(metric)}-nfe{where['nfe']}" + (
        f"-step{where['step']}" if "step" in where else "")
    written = []
    for f in fmts:
        path = out / f"{stem}{FORMATS[f][0]}"
        path.write_text(render_fns[f](doc, ci_style))
        written.append(path)
    return doc, written


__all__ = ["Entry", "RULE", "parse_at", "rank_rows", "select", "write_leaderboard",
           "leaderboard_document", "metric_direction"]
