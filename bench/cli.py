"""Command line: bench run | plan | status | cancel | report | leaderboard | compare | list."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from bench.errors import BenchError

KINDS = ("models", "samplers", "grids", "evals", "metrics", "features", "datasets")


def check_folder(path: str | Path, arg: str, write: bool) -> Path:
    """``arg``'s folder is usable before any work: not a file, its nearest existing parent a
    folder, and (``write``) that folder writable. It need not exist yet (it is created)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BenchError(f"{arg} '{p}' is a file, not a folder; pass a folder path (it is "
                         f"created if missing), or move the file away.")
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise BenchError(f"{arg} '{p}': '{anc}' is a file, so no folder can be made under it; "
                         f"pass a folder path whose parents are folders.")
    if write and not os.access(anc, os.W_OK | os.X_OK):
        where = "the folder" if anc == p else f"its nearest existing parent '{anc}'"
        raise BenchError(f"{arg} '{p}': {where} is not writable; pass a folder you can write "
                         f"to, or fix its permissions.")
    return p


def check_existing_folder(path: str | Path, arg: str = "--results") -> Path:
    """A results folder that must already exist (bench status, bench cancel)."""
    p = Path(path)
    if not p.is_dir():
        raise BenchError(f"{arg} '{p}' {'is a file, not a folder' if p.exists() else 'does not exist'}"
                         f"; pass the folder 'bench run' wrote the run to (bench run SUITE "
                         f"--results DIR).")
    return p


def cmd_list(args: argparse.Namespace) -> int:
    from bench import registry

    registry.load_all()
    regs = {"models": registry.MODELS, "samplers": registry.SAMPLERS, "grids": registry.GRIDS,
            "evals": registry.EVALS, "metrics": registry.METRICS, "features": registry.FEATURES,
            "datasets": registry.DATASETS}
    for kind in [args.kind] if args.kind else KINDS:
        print(f"{kind}:")
        for e in regs[kind]:
            print(f"  {e.name:16s} {e.description}")
            info = e.meta.get("info")
            if info is not None:
                print(f"  {'':16s} evals/step {info.evals_per_step}, order "
                      f"{info.order_for(e.params()) or '–'}, "
                      f"default grid {info.grid}; {info.paper}")
            for row, o in getattr(e.load(), "outputs", {}).items():  # the rows it emits
                better = {True: "higher is better", False: "lower is better", None: "no direction"}
                print(f"  {'':16s} row {row}: {better[o.higher_is_better]}; interval {o.interval}")
            params = e.params()
            if params:
                print(f"  {'':16s} params: " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.dispatch import check_executor
    from bench.store import ResultStore
    from bench.suite import load_suite, plan, rounding_notes, sweep_lines

    check_folder(args.results, "--results", write=False)
    suite = load_suite(args.suite, args.set)
    check_executor(suite.source, suite["executor"], None)
    shards = plan(suite)
    store = ResultStore(args.results)
    stored = {k for k in {c.cell_key for c in shards} if store.rows_stored(suite.name, k)}
    done = sum(c.cell_key in stored or store.shard_problem(c.key) is None for c in shards)  # read-only
    n_cells = len({c.cell_key for c in shards})
    print(f"suite {suite.name}: {len(suite.models)} model(s) x {len(suite.samplers)} sampler(s) x "
          f"{len(suite['nfe'])} NFE x {len(suite.evals)} eval(s): {n_cells} cell(s) in "
          f"{len(shards)} shard(s), {done} already done in {args.results}")
    for line in sweep_lines(suite):  # entries written with swept params (bench.suite)
        print(line)
    for line in suite.budget.lines():  # counted and bounded by plan() (bench.budget)
        print(line)
    for conds, m in zip(suite.conditions, suite.models):
        if conds.kind != "none":
            print(f"conditions of {m['label']}: {conds.summary()}")
    for m in suite.models:
        if "calibrate" in m:  # bench.calibration: estimated once per model, uncounted, cached
            c = m["calibrate"]
            print(f"calibration of {m['label']}: mean noise prediction over {c['samples']} "
                  f"samples of {c['data']} at {c['points']} levels (seed {c['seed']}): "
                  f"{c['samples'] * c['points']:,} model evaluations, not counted as NFE, cached "
                  f"in {args.results}/_cache/calibration (jobs that load the model before the "
                  f"file exists each compute it)")
        if "laplace" in m:  # bench.bayesian_model: fitted once per model, uncounted, cached
            c = m["laplace"]
            print(f"last-layer Laplace of {m['label']}: fitted on {c['samples']} images of "
                  f"{c['data']} (seed {c['seed']}), one network pass each, not counted as NFE, "
                  f"cached in {args.results}/_cache/laplace")
    for note in rounding_notes(suite, shards):
        print(f"note: {note}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.dispatch import check_executor, run_suite
    from bench.suite import load_suite, plan, rounding_notes

    check_folder(args.results, "--results", write=True)
    if args.jobs is not None and args.jobs < 1:
        raise BenchError(f"--jobs {args.jobs}: must be >= 1; pass a positive number of jobs, or "
                         f"leave it out for the executor's default.")
    suite = load_suite(args.suite, args.set)
    check_executor(suite.source, suite["executor"], args.executor)
    shards = plan(suite)  # refuses a suite over the bounds of bench.budget before any job
    for line in suite.budget.lines():
        print(line, file=sys.stderr)
    for note in rounding_notes(suite, shards):
        print(f"note: {note}", file=sys.stderr)
    summary = run_suite(suite, args.results, executor=args.executor, jobs=args.jobs, shards=shards)
    print(summary.line())
    for f in summary.failed:
        print(f"failed: {f['key']}: {f['error']} (traceback in {args.results}/_failed/{f['key']}.json)")
    for line in summary.nonfinite:
        print(f"non-finite: {line}")
    return 1 if summary.failed or summary.nonfinite else 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import render

    out = args.out or str(Path("reports") / (args.suite or "report"))
    check_folder(out, "--out", write=True)
    if args.fit_min_nfe is not None and args.fit_min_nfe < 0:
        raise BenchError(f"--fit-min-nfe {args.fit_min_nfe}: must be >= 0; pass the smallest "
                         f"counted NFE to fit over, or leave it out.")
    for p in render(args.results, out, suite=args.suite, fit_min_nfe=args.fit_min_nfe,
                    formats=args.format, ci_style=args.ci, table=args.table):
        print(p)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.report.leaderboard import write_leaderboard
    from bench.report.render_md import table_md

    check_folder(args.out, "--out", write=True)
    doc, written = write_leaderboard(args.results, args.metric, args.at, slice_=args.slice,
                                     out=args.out, formats=args.format, ci_style=args.ci,
                                     eval_=args.eval, samples=args.samples)
    print(table_md(doc.blocks[-1], args.ci))
    for p in written:
        print(p)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench.dispatch import run_liveness, shard_states
    from bench.store import ResultStore

    store = ResultStore(check_existing_folder(args.results))
    manifest = store.read_run(args.run)
    states = shard_states(store, manifest)
    counts = {s: sum(1 for r in states if r["state"] == s)
              for s in ("pending", "running", "done", "failed", "corrupt")}
    print(f"run {manifest['run_id']} (suite {manifest['suite']}, executor {manifest['executor']}, "
          f"{manifest.get('status', '?')}): " + ", ".join(f"{v} {k}" for k, v in counts.items()
                                                          if v or k != "corrupt"))
    live = run_liveness(manifest, states)
    if live:
        print(f"  {live}")
    for r in states:
        print(f"  {r['state']:8s} {r['shard']}  {r['reason']}".rstrip())
        if r.get("traceback"):
            print("    " + r["traceback"].rstrip().replace("\n", "\n    "))
    return 1 if counts["failed"] or counts["corrupt"] else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from bench.dispatch import cancel_run
    from bench.store import ResultStore

    store = ResultStore(check_existing_folder(args.results))
    cancelled = cancel_run(store, store.read_run(args.run))
    print("cancelled: " + (", ".join(cancelled) if cancelled else "nothing was queued or running"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import compare, load_rows, parse_tol

    tols = {}
    for t in args.tol:
        metric, _, spec = t.partition("=")
        metric, spec = metric.strip(), spec.strip()
        if not metric or not spec:
            raise BenchError(f"--tol {t!r}: {'no metric name' if not metric else 'no tolerance'}; "
                             f"write METRIC=abs:X, METRIC=rel:X or METRIC=ci, e.g. --tol rmse=rel:0.05.")
        try:
            parse_tol(spec)
        except BenchError as exc:
            raise BenchError(f"--tol {t!r}: {exc}") from None
        tols[metric] = spec
    try:
        parse_tol(args.default_tol)
    except BenchError as exc:
        raise BenchError(f"--default-tol {args.default_tol!r}: {exc}") from None
    table, md = compare(load_rows(args.baseline, args.results, "baseline"),
                        load_rows(args.current, args.results, "current"), tols, args.default_tol)
    print(md)
    return 1 if table["regressed"].any() else 0


def cmd_train(args: argparse.Namespace) -> int:
    from bench.train import main as train_main

    return train_main(args)


class BenchParser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one 'error: ...' paragraph on stderr, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}. Fix: see '{self.prog} --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    p = BenchParser(prog="bench", description="Benchmark harness for diffusion models.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a suite (computes only missing cells)")
    r.add_argument("suite", help="suite YAML file")
    r.add_argument("--executor", choices=("debug", "local", "slurm"), default=None,
                   help="where jobs run (default: the suite's executor.name, else debug)")
    r.add_argument("--results", default="results", help="results folder (default: results/)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite field, e.g. --set samples=128 (repeatable)")
    r.add_argument("--jobs", type=int, default=None, help="number of jobs to pack shards into")
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("plan", help="validate a suite and show its cells without running")
    pl.add_argument("suite")
    pl.add_argument("--results", default="results")
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pl.set_defaults(func=cmd_plan)

    rep = sub.add_parser("report", help="render Markdown, HTML and LaTeX (+ PNG) from a results folder")
    rep.add_argument("results", help="results folder")
    rep.add_argument("--out", default=None, help="output folder (default: reports/<suite>)")
    rep.add_argument("--suite", default=None, help="only this suite's rows")
    rep.add_argument("--fit-min-nfe", type=int, default=None,
                     help="fit convergence slopes only over counted NFE >= this "
                          "(default: the suite's report.fit_min_nfe, else all)")
    rep.add_argument("--format", default="md,html,latex",
                     help="comma-separated output formats: md, html, latex (default: all three)")
    rep.add_argument("--ci", default="brackets", choices=("brackets", "pm"),
                     help="write intervals as 'value [low, high]' (default) or 'value ± half-width'")
    rep.add_argument("--table", default=None, metavar="ROW,COL",
                     help="the rows and columns of each metric's value tables, two of model, "
                          "sampler, nfe, slice (default: sampler,nfe per model; e.g. "
                          "sampler,model: one table per NFE)")
    rep.set_defaults(func=cmd_report)

    lb = sub.add_parser("leaderboard", help="rank (suite, model, sampler) entries of one metric "
                        "at one NFE across results folders")
    lb.add_argument("results", nargs="+", help="results folders or Parquet files (read together)")
    lb.add_argument("--metric", required=True, help="the metric row to rank by, e.g. fid, rmse")
    lb.add_argument("--at", required=True, metavar="nfe=N[,step=K]",
                    help="the requested NFE (and optionally the step) to compare at")
    lb.add_argument("--slice", default="all", help="the slice of the rows (default: all)")
    lb.add_argument("--eval", default=None, help="only rows of this eval (default: any)")
    lb.add_argument("--samples", type=int, default=None, metavar="N",
                    help="only rows computed from N samples (default: any; the table shows each "
                    "entry's count)")
    lb.add_argument("--out", default=str(Path("reports") / "leaderboard"),
                    help="output folder (default: reports/leaderboard)")
    lb.add_argument("--format", default="md,html,latex",
                    help="comma-separated output formats: md, html, latex (default: all three)")
    lb.add_argument("--ci", default="brackets", choices=("brackets", "pm"),
                    help="write intervals as 'value [low, high]' (default) or 'value ± half-width'")
    lb.set_defaults(func=cmd_leaderboard)

    st = sub.add_parser("status", help="pending / running / done / failed cells of a run")
    st.add_argument("run", help="run id printed by 'bench run', or 'latest'")
    st.add_argument("--results", default="results")
    st.set_defaults(func=cmd_status)

    ca = sub.add_parser("cancel", help="cancel a run's queued or running jobs")
    ca.add_argument("run", help="run id, or 'latest'")
    ca.add_argument("--results", default="results")
    ca.set_defaults(func=cmd_cancel)

    co = sub.add_parser("compare", help="compare two result sets; exit 1 on a regression")
    co.add_argument("baseline", help="Parquet file/folder, or a run id in --results")
    co.add_argument("current", help="Parquet file/folder, or a run id in --results")
    co.add_argument("--results", default="results", help="where run ids are looked up")
    co.add_argument("--tol", action="append", default=[], metavar="METRIC=abs:X|rel:X|ci",
                    help="tolerance for one metric (repeatable)")
    co.add_argument("--default-tol", default="rel:0.05", help="tolerance for other metrics")
    co.set_defaults(func=cmd_compare)

    ls = sub.add_parser("list", help="list registered models, samplers, grids, evals, metrics")
    ls.add_argument("kind", nargs="?", choices=KINDS)
    ls.set_defaults(func=cmd_list)

    tr = sub.add_parser("train", help="train a small DDPM from a YAML config (resumable)")
    tr.add_argument("config", help="training YAML, or the name of one in bench/train_configs")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set max_steps=100 (repeatable)")
    tr.add_argument("--out", default=None, help="output folder (default: the config's 'out')")
    tr.add_argument("--max-steps", type=int, default=None, help="override max_steps")
    tr.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    tr.set_defaults(func=cmd_train)

    from bench.cli_fidelity import add_parsers as add_fidelity_parsers

    add_fidelity_parsers(sub)  # bench fid, bench refstats

    from bench.cli_clipscore import add_parsers as add_clipscore_parsers

    add_clipscore_parsers(sub)  # bench clipscore
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (printed by BenchParser.error) or --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.func(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume.",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left early (`bench status | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit's flush of stdout cannot fail again
        return 141  # 128 + SIGPIPE, as a shell reports a process a pipe closed on


if __name__ == "__main__":
    sys.exit(main())
