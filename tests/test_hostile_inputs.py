"""A catalogue of hostile and malformed inputs, the one place that lists them all.

Every case runs ``bench ARGS`` in-process and checks: the exit code (2 for a user error, 0 for
an input that is valid), that stderr is one ``error: ...`` paragraph (no traceback, no blank
line) naming the offending field or argument, and that nothing was written: ``{res}`` (the
results folder, report output or refstats folder of the case) must not exist afterwards, and
the shared results folder ``{rows}`` is unchanged.

Placeholders in the arguments: ``{suite}`` the case's suite file, ``{res}`` a folder that must
stay absent, ``{rows}`` a results folder with real rows (one tiny run), ``{tmp}`` the case's
folder, which holds the files of ``workspace`` below.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import small_suite


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    suite: Any = None            # dict, YAML text or bytes written to {suite}; None: no file
    expect: tuple[str, ...] = ()  # substrings of the message; the field or argument first
    code: int = 2


def C(id: str, args: str | tuple[str, ...], suite: Any = None, *expect: str, code: int = 2) -> Any:
    args = tuple(args.split()) if isinstance(args, str) else args
    return pytest.param(Case(id, args, suite, expect, code), id=id)


def S(**over: Any) -> dict:
    """A fast valid suite (one sampler, one NFE) with fields replaced."""
    return small_suite(**{"samplers": ["ddim"], "nfe": [10], "samples": 8, **over})


def drop(*fields: str) -> dict:
    d = S()
    for f in fields:
        del d[f]
    return d


def with_model_params(**params: Any) -> dict:
    return S(models=[{"name": "gmm", "label": "g", "params": {"shape": [1, 4, 4], **params}}])


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefghijk", "bcdefghijkl"))
# within the loader's 100-alias bound, but 10^10 values once expanded
WIDE_BOMB = yaml.safe_dump(S()) + "description:\n" + "".join(
    f"  d{i}: &d{i} [{', '.join(['*d' + str(i - 1)] * 10) if i else '1, 1, 1, 1, 1, 1, 1, 1, 1, 1'}]\n"
    for i in range(10)) + "report: {fit_min_nfe: *d9}\n"

SET_BOMB = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
    f"&{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi")) + "]"

PLAN = "plan {suite} --results {res}"
RUN = "run {suite} --results {res}"

SUITE_FILES = [
    C("suite-missing", "run {tmp}/nope.yaml --results {res}", None, "nope.yaml", "does not exist"),
    C("suite-is-a-folder", "plan {tmp}/adir --results {res}", None, "adir", "is a folder"),
    C("suite-empty", PLAN, "", "(file)", "is empty"),
    C("suite-only-comments", PLAN, "# nothing here\n", "'name'", "missing"),
    C("suite-is-a-list", PLAN, "- a\n- b\n", "(file)", "must be a mapping"),
    C("suite-is-a-scalar", PLAN, "hello\n", "(file)", "must be a mapping"),
    C("suite-not-utf8", PLAN, "name: caf\xe9\n".encode("latin-1"), "(file)", "not UTF-8"),
    C("suite-binary", PLAN, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "(file)", "not UTF-8"),
    C("yaml-unclosed-bracket", PLAN, "name: x\nmodels: [gmm\nsamplers: {", "(file)",
      "not valid YAML", "line"),
    C("yaml-tab-indent", PLAN, "name: x\nmodels:\n\t- gmm\n", "(file)", "not valid YAML"),
    C("yaml-python-tag", PLAN, "name: !!python/object/apply:os.system ['true']\n", "(file)",
      "not valid YAML"),
    C("yaml-alias-bomb", PLAN, BOMB, "(file)", "more than 100 aliases"),
    C("yaml-wide-alias-bomb", RUN, WIDE_BOMB, "field '", "expands to more than 100,000"),
    C("yaml-undefined-alias", PLAN, "name: *nope\n", "(file)", "not valid YAML"),
]

TOP_LEVEL = [
    C("unknown-field-misspelt", PLAN, {**S(), "sample": 3}, "'sample'", "Did you mean 'samples'"),
    C("unknown-field-sampler", PLAN, {**drop("samplers"), "sampler": ["ddim"]}, "'sampler'",
      "'samplers'"),
    C("unknown-field-random", PLAN, {**S(), "turbo": True}, "'turbo'", "not a suite field"),
    C("missing-name", PLAN, drop("name"), "'name'", "missing"),
    C("missing-models", PLAN, drop("models"), "'models'", "missing"),
    C("missing-samplers", PLAN, drop("samplers"), "'samplers'", "missing"),
    C("missing-evals", PLAN, drop("evals"), "'evals'", "missing"),
    C("name-leading-underscore", PLAN, S(name="_x"), "'name'", "'_x'"),
    C("name-path-traversal", RUN, S(name="../x"), "'name'", "'../x'"),
    C("name-non-ascii", PLAN, S(name="café"), "'name'", "ASCII"),
    C("name-slash", PLAN, S(name="a/b"), "'name'"),
    C("name-space", PLAN, S(name="my suite"), "'name'"),
    C("name-empty", PLAN, S(name=""), "'name'"),
    C("name-integer", PLAN, S(name=123), "'name'"),
    C("name-leading-dash", PLAN, S(name="-x"), "'name'"),
]

NUMBERS = [
    C("samples-string", RUN, S(samples="many"), "'samples'", "'many'", "integer"),
    C("samples-zero", PLAN, S(samples=0), "'samples'", ">= 1"),
    C("samples-negative", PLAN, S(samples=-5), "'samples'", "-5"),
    C("samples-boolean", PLAN, S(samples=True), "'samples'", "True"),
    C("samples-float", PLAN, S(samples=2.5), "'samples'", "2.5"),
    C("batch-size-zero", PLAN, S(batch_size=0), "'batch_size'", ">= 1"),
    C("batch-size-string", PLAN, S(batch_size="8"), "'batch_size'", "'8'"),
    C("shard-size-zero", PLAN, S(shard_size=0), "'shard_size'"),
    C("shard-size-string", PLAN, S(shard_size="x"), "'shard_size'"),
    C("seed-negative", PLAN, S(seed=-1), "'seed'", ">= 0"),
    C("seed-string", PLAN, S(seed="abc"), "'seed'", "'abc'"),
    C("seed-float", PLAN, S(seed=1.5), "'seed'"),
    C("seed-too-large", PLAN, S(seed=2 ** 70), "'seed'"),
    C("nfe-zero", PLAN, S(nfe=[10, 0]), "nfe[1]", "got 0"),
    C("nfe-negative", PLAN, S(nfe=[-5]), "nfe[0]", "-5"),
    C("nfe-string-item", PLAN, S(nfe=["ten"]), "nfe[0]", "'ten'"),
    C("nfe-float-item", PLAN, S(nfe=[2.5]), "nfe[0]", "2.5"),
    C("nfe-boolean-item", PLAN, S(nfe=[True]), "nfe[0]"),
    C("nfe-empty-list", PLAN, S(nfe=[]), "'nfe'", "list of integers"),
    C("nfe-string", PLAN, S(nfe="10,20"), "'nfe'", "'10,20'"),
    C("nfe-mapping", PLAN, S(nfe={"a": 1}), "'nfe'"),
    C("nfe-huge", PLAN, S(nfe=[10 ** 9]), "nfe[0]"),
    C("nfe-scalar-is-valid", PLAN, S(nfe=10), code=0),
    C("nfe-rounding-unknown", PLAN, S(nfe_rounding="nearest"), "'nfe_rounding'", "'nearest'"),
    C("nfe-unreachable", PLAN, S(nfe_rounding="error", samplers=["heun"]), "nfe[0]", "heun",
      "nfe_rounding"),
    C("device-unknown", PLAN, S(device="tpu"), "'device'", "'tpu'"),
    C("device-integer", PLAN, S(device=3), "'device'"),
]

ENTRIES = [
    C("model-unknown", PLAN, S(models=["gmmm"]), "models[0].name", "Did you mean 'gmm'"),
    C("sampler-unknown", RUN, S(samplers=["ddim", "huen"]), "samplers[1].name", "'heun'"),
    C("eval-unknown", PLAN, S(evals=["nfe_curv"]), "evals[0].name", "'nfe_curve'"),
    C("model-entry-field-misspelt", PLAN, S(models=[{"name": "gmm", "parms": {}}]),
      "models[0].parms", "'params'"),
    C("model-param-misspelt", PLAN, with_model_params(covv="full"), "models[0].params.covv",
      "'cov'"),
    C("model-params-not-mapping", PLAN, S(models=[{"name": "gmm", "params": [1, 2]}]),
      "models[0].params", "mapping"),
    C("model-param-bad-value", PLAN, with_model_params(cov="weird"), "models[0].params", "'weird'"),
    C("model-shape-string", PLAN, with_model_params(shape="abc"), "models[0].params", "'shape'",
      "'abc'"),
    C("model-shape-nested", PLAN, with_model_params(shape=[[1]]), "models[0].params", "'shape'"),
    C("model-seed-string", PLAN, with_model_params(seed="x"), "models[0].params", "'seed'"),
    C("model-var-min-negative", PLAN, with_model_params(var_min=-1), "models[0].params",
      "'var_min'"),
    C("model-var-max-below-var-min", PLAN, with_model_params(var_min=2, var_max=1),
      "models[0].params", "'var_max'"),
    C("model-schedule-unknown", PLAN, with_model_params(schedule="nope"), "models[0].params",
      "'schedule'", "'nope'"),
    C("model-schedule-bad-parameter", PLAN, with_model_params(schedule={"name": "discrete",
                                                                        "bogus": 1}),
      "models[0].params", "'schedule'", "bogus"),
    C("model-entry-integer", PLAN, S(models=[3]), "models[0]", "3"),
    C("model-entry-without-name", PLAN, S(models=[{"label": "x"}]), "models[0]", "'name'"),
    C("models-string", PLAN, S(models="gmm"), "'models'", "non-empty list"),
    C("models-empty", PLAN, S(models=[]), "'models'", "non-empty list"),
    C("samplers-mapping", PLAN, S(samplers={"ddim": 1}), "'samplers'", "non-empty list"),
    C("sampler-param-misspelt", PLAN, S(samplers=[{"name": "ddim", "params": {"etta": 1}}]),
      "samplers[0].params.etta", "'eta'"),
    C("duplicate-sampler-labels", RUN, S(samplers=["ddim", "ddim"]), "'samplers'",
      "same label"),
    C("duplicate-explicit-labels", PLAN, S(samplers=[{"name": "ddim", "label": "x"},
                                                     {"name": "euler", "label": "x"}]),
      "'samplers'", "['x']"),
    C("grid-unknown", PLAN, S(samplers=[{"name": "euler", "grid": "karas"}]),
      "samplers[0].grid.name", "'karras'"),
    C("grid-param-misspelt", PLAN, S(samplers=[{"name": "euler", "grid": {"name": "karras",
                                                                          "rhoo": 7}}]),
      "samplers[0].grid.rhoo", "'rho'"),
    C("grid-integer", PLAN, S(samplers=[{"name": "euler", "grid": 5}]), "samplers[0].grid", "5"),
    C("grid-order-contradicts-params", PLAN, S(samplers=[{
        "name": "dpm_solver_fast", "params": {"order": 2}, "grid": {"name": "dpm_fast",
                                                                      "order": 3}}]),
      "samplers[0].grid.order", "state it once"),
    C("eval-param-misspelt", PLAN, S(evals=[{"name": "nfe_curve", "params": {"metrix": []}}]),
      "evals[0].params.metrix", "'metrics'"),
    C("metric-unknown", PLAN, S(evals=[{"name": "nfe_curve",
                                        "params": {"metrics": ["oracle_rmsee"]}}]),
      "evals[0].params", "oracle_rmsee"),
    C("metrics-not-a-list", PLAN, S(evals=[{"name": "nfe_curve", "params": {"metrics": 5}}]),
      "evals[0].params", "5"),
    C("nfe-to-target-without-target", PLAN, S(evals=[{"name": "nfe_to_target",
                                                      "params": {"nfe_max": 20}}]),
      "evals[0].params", "target"),
]

BLOCKS = [
    C("conditions-on-unconditional-model", PLAN, S(conditions={"classes": 3}), "conditions",
      "unconditional"),
    C("conditions-string", PLAN, S(conditions="abc"), "conditions", "'abc'"),
    C("conditions-misspelt-key", PLAN, S(conditions={"clases": "balanced"}), "conditions",
      "clases"),
    C("conditions-prompts-integer", PLAN, S(conditions={"prompts": 5}), "conditions"),
    C("executor-string", PLAN, S(executor="slurm"), "'executor'", "mapping"),
    C("executor-unknown-name", RUN, S(executor={"name": "kubernetes"}), "executor.name",
      "'kubernetes'"),
    C("executor-jobs-string", RUN, S(executor={"name": "debug", "jobs": "many"}),
      "executor.jobs", "'many'"),
    C("executor-slurm-unknown-parameter", RUN, S(executor={"name": "slurm", "partiton": "x"}),
      "executor.partiton", "'partition'"),
    C("report-block-integer", PLAN, S(report=5), "'report'", "mapping"),
    C("report-unknown-option", PLAN, S(report={"fit_min": 5}), "report.fit_min", "not a report"),
    C("suite-report-fit-min-nfe-string", PLAN, S(report={"fit_min_nfe": "x"}), "report.fit_min_nfe",
      "integer"),
    C("suite-report-galleries-string", PLAN, S(report={"galleries": "*/ddim/*"}), "report.galleries",
      "list of cell patterns"),
    C("device-cuda-not-an-index", PLAN, S(device="cuda:x"), "'device'", "cuda:N"),
    C("name-too-long", RUN, S(name="a" * 300), "'name'", "at most 100"),
    C("eval-slices-integer", PLAN, S(evals=[{"name": "nfe_curve", "params": {"slices": 5}}]),
      "evals[0].params.slices", "list of slice names"),
    C("sampler-value-refused-by-dry-run", RUN, S(samplers=[{"name": "ddim", "params": {"eta": -1}}]),
      "samplers[0].params", "eta must be >= 0"),
    C("grid-value-refused-by-dry-run", RUN,
      S(samplers=[{"name": "ddim", "grid": {"name": "time_uniform", "t_end": 5000}}]),
      "samplers[0].grid", "t_end"),
    C("gmm-nan-mean", RUN, with_model_params(means=[[float("nan")] * 16]), "models[0].params",
      "'means'", "NaN"),
    C("gmm-overflowing-mean", RUN, with_model_params(means=[[1e308] * 16]), "models[0].params",
      "1e150"),
    C("a-billion-shards", PLAN, S(samples=10**9, shard_size=1), "shard_size", "100,000"),
]

INCLUDES = [
    C("include-missing", PLAN, {**S(), "include": "nope.yaml"}, "include", "nope.yaml"),
    C("include-itself", PLAN, {**S(), "include": "suite.yaml"}, "include", "cycle"),
    C("include-cycle-of-two", PLAN, {**S(), "include": "cycle_a.yaml"}, "include", "cycle"),
    C("include-integer", PLAN, {**S(), "include": 5}, "include", "5"),
    C("include-list-of-integers", PLAN, {**S(), "include": [1, 2]}, "include"),
    C("include-not-utf8", PLAN, {**S(), "include": "latin1.yaml"}, "latin1.yaml", "not UTF-8"),
    C("include-valid", PLAN, {"include": "base.yaml", "name": "child"}, code=0),
    C("include-bomb", PLAN, {**S(), "include": "bomb0.yaml"}, "include", "more than 50"),
]

SETS = [
    C("set-without-equals", PLAN + " --set samples", S(), "samples", "key=value"),
    C("set-into-integer", PLAN + " --set seed.x=1", S(), "seed.x", "'seed' is 3", "--set seed="),
    C("set-into-string", PLAN + " --set name.a.b=1", S(), "name.a.b", "'name' is 'tiny'"),
    C("set-into-list-item-integer", PLAN + " --set nfe.0.x=1", S(), "nfe.0.x", "'nfe.0' is 10"),
    C("set-list-index-out-of-range", PLAN + " --set models.5.params.cov=full", S(), "models.5",
      "not an index"),
    C("set-list-index-not-a-number", PLAN + " --set nfe.x=1", S(), "nfe.x", "'x'"),
    C("set-empty-key", PLAN + " --set =1", S(), "--set", "empty part"),
    C("set-empty-key-part", PLAN + " --set a..b=1", S(), "a..b", "empty part"),
    C("set-unknown-field", PLAN + " --set turbo=1", S(), "'turbo'", "not a suite field"),
    C("set-bad-integer", PLAN + " --set samples=abc", S(), "'samples'", "'abc'"),
    C("set-bad-nfe-list", PLAN + " --set nfe=[1,0]", S(), "nfe[1]"),
    C("set-unparsable-yaml-value", PLAN + " --set samples=*a", S(), "'samples'", "'*a'"),
    C("set-duplicate-labels", PLAN + " --set samplers=[ddim,ddim]", S(), "'samplers'",
      "same label"),
    C("set-alias-bomb-value", (*PLAN.split(), "--set", "description=" + SET_BOMB), S(),
      "field '", "expands to more than 100,000"),
    C("set-nested-valid", PLAN + " --set samplers.0.params.eta=0.5", S(), code=0),
    C("set-into-null-block-valid", PLAN + " --set report.fit_min_nfe=3", S(report=None),
      code=0),
]

ARGUMENTS = [
    C("plan-results-is-a-file", "plan {suite} --results {tmp}/notes.txt", S(), "--results",
      "notes.txt", "is a file"),
    C("run-results-is-a-file", "run {suite} --results {tmp}/notes.txt", S(), "--results",
      "is a file"),
    C("run-results-under-a-file", "run {suite} --results {tmp}/notes.txt/sub", S(), "--results",
      "notes.txt"),
    C("run-jobs-zero", RUN + " --jobs 0", S(), "--jobs", ">= 1"),
    C("run-jobs-not-a-number", RUN + " --jobs abc", S(), "--jobs", "'abc'"),
    C("run-executor-unknown-flag", RUN + " --executor k8s", S(), "--executor", "'k8s'"),
    C("unknown-command", "frobnicate", None, "frobnicate", "invalid choice"),
]

REPORT = [
    C("report-empty-folder", "report {tmp}/empty --out {res}", None, "empty", "no result rows"),
    C("report-folder-without-rows", "report {tmp}/norows --out {res}", None, "norows",
      "no result rows"),
    C("report-missing-folder", "report {tmp}/nope --out {res}", None, "nope", "does not exist"),
    C("report-not-parquet", "report {tmp}/notes.txt --out {res}", None, "notes.txt",
      "not readable"),
    C("report-parquet-without-row-columns", "report {tmp}/other.parquet --out {res}", None,
      "other.parquet", "lacks the column(s)"),
    C("report-truncated-row-file", "report {tmp}/rows_trunc --out {res}", None, "rows_trunc",
      "not readable", "cut.parquet"),
    C("report-foreign-parquet-in-folder", "report {tmp}/rows_foreign --out {res}", None,
      "rows_foreign", "zz.parquet"),
    C("report-foreign-parquet-first-in-folder", "report {tmp}/rows_foreign_first --out {res}",
      None, "rows_foreign_first", "00.parquet", "lacks the column(s)"),
    C("report-stored-fit-min-nfe-string", "report {tmp}/rows_badfit --out {res}", None,
      "report.fit_min_nfe", "'x'", "--fit-min-nfe"),
    C("report-corrupt-manifest-is-ignored", "report {tmp}/rows_badmanifest --out {tmp}/out",
      None, code=0),
    C("report-out-is-a-file", "report {rows} --out {tmp}/notes.txt", None, "--out",
      "is a file"),
    C("report-out-under-a-file", "report {rows} --out {tmp}/notes.txt/x", None, "--out",
      "notes.txt"),
    C("report-unknown-suite", "report {rows} --suite nope --out {res}", None, "--suite",
      "'nope'", "tiny"),
    C("report-fit-min-nfe-negative", "report {rows} --fit-min-nfe -1 --out {res}", None,
      "--fit-min-nfe", "-1"),
    C("report-fit-min-nfe-string", "report {rows} --fit-min-nfe x --out {res}", None,
      "--fit-min-nfe", "'x'"),
]

COMPARE = [
    C("compare-empty-folder", "compare {tmp}/empty {rows} --results {res}", None, "baseline",
      "empty", "no result rows"),
    C("compare-missing-path", "compare {tmp}/nope {rows} --results {res}", None, "baseline",
      "nope", "does not exist"),
    C("compare-missing-current", "compare {rows} {tmp}/nope --results {res}", None, "current",
      "nope"),
    C("compare-not-parquet", "compare {tmp}/notes.txt {rows} --results {res}", None, "baseline",
      "notes.txt", "not readable"),
    C("compare-parquet-without-row-columns", "compare {tmp}/other.parquet {rows} --results {res}",
      None, "baseline", "other.parquet", "lacks the column(s)"),
    C("compare-truncated-row-file", "compare {rows} {tmp}/rows_trunc --results {res}", None,
      "current", "cut.parquet"),
    C("compare-foreign-parquet-in-folder", "compare {tmp}/rows_foreign {rows} --results {res}",
      None, "baseline", "zz.parquet"),
    C("compare-run-id-unknown", "compare 20200101-000000-abcdef {rows} --results {rows}", None,
      "20200101-000000-abcdef", "no run"),
    C("compare-run-id-without-results", "compare latest {rows} --results {res}", None,
      "--results", "is not a folder"),
    C("tol-without-equals", "compare {rows} {rows} --results {res} --tol rmse", None, "--tol",
      "'rmse'"),
    C("tol-without-metric", "compare {rows} {rows} --results {res} --tol =abs:1", None, "--tol",
      "no metric name"),
    C("tol-not-a-number", "compare {rows} {rows} --results {res} --tol rmse=abs:x", None,
      "--tol", "'abs:x'"),
    C("tol-negative", "compare {rows} {rows} --results {res} --tol rmse=rel:-1", None, "--tol",
      "'rel:-1'"),
    C("tol-nan", "compare {rows} {rows} --results {res} --tol rmse=abs:nan", None, "--tol",
      "'abs:nan'"),
    C("tol-unknown-kind", "compare {rows} {rows} --results {res} --tol rmse=pct:5", None,
      "--tol", "'pct:5'"),
    C("tol-ci-with-value", "compare {rows} {rows} --results {res} --tol rmse=ci:3", None,
      "--tol", "'ci:3'"),
    C("default-tol-bad", "compare {rows} {rows} --results {res} --default-tol foo", None,
      "--default-tol", "'foo'"),
    C("compare-identical-is-valid", "compare {rows} {rows} --results {res}", None, code=0),
]

RUNS = [
    C("status-bad-run-id", "status xyz --results {rows}", None, "'xyz'", "run id"),
    C("status-path-as-run-id", "status ../../etc/passwd --results {rows}", None,
      "'../../etc/passwd'", "run id"),
    C("status-missing-results", "status latest --results {res}", None, "--results",
      "does not exist"),
    C("status-results-is-a-file", "status latest --results {tmp}/notes.txt", None, "--results",
      "is a file"),
    C("status-no-runs-yet", "status latest --results {tmp}/empty", None, "'latest'", "no run"),
    C("cancel-bad-run-id", "cancel 2020-01-01 --results {rows}", None, "'2020-01-01'", "run id"),
    C("cancel-missing-results", "cancel latest --results {res}", None, "--results",
      "does not exist"),
]

FIDELITY = [
    C("fid-corrupt-reference-image", "fid {tmp}/imgs {tmp}/imgs_bad --refstats-dir {res}", None,
      "imgs_bad", "garbage.png", "cannot be decoded"),
    C("fid-truncated-reference-image", "fid {tmp}/imgs {tmp}/imgs_trunc --refstats-dir {res}",
      None, "imgs_trunc", "cut.png", "truncated"),
    C("fid-empty-generated-folder", "fid {tmp}/empty {tmp}/imgs --refstats-dir {res}", None,
      "GENERATED", "empty", "no images"),
    C("fid-missing-generated-folder", "fid {tmp}/nope {tmp}/imgs --refstats-dir {res}", None,
      "GENERATED", "nope"),
    C("fid-generated-scalar-array", "fid {tmp}/scalar.npy {tmp}/imgs --refstats-dir {res}", None,
      "GENERATED", "scalar.npy", "shape ()"),
    C("fid-generated-garbage-npz", "fid {tmp}/garbage.npz {tmp}/imgs --refstats-dir {res}", None,
      "GENERATED", "garbage.npz", "cannot be read"),
    C("fid-empty-reference-folder", "fid {tmp}/imgs {tmp}/empty --refstats-dir {res}", None,
      "reference", "empty"),
    C("fid-missing-reference", "fid {tmp}/imgs {tmp}/nope --refstats-dir {res}", None, "'ref'",
      "nope"),
    C("fid-unknown-metric", "fid {tmp}/imgs {tmp}/imgs --metrics fidd --refstats-dir {res}",
      None, "--metrics", "fidd"),
    C("refstats-missing-dataset", "refstats build --dataset {tmp}/nope --refstats-dir {res}",
      None, "--dataset", "nope"),
    C("refstats-empty-dataset", "refstats build --dataset {tmp}/empty --refstats-dir {res}",
      None, "--dataset", "no images"),
    C("refstats-build-without-dataset", "refstats build --refstats-dir {res}", None,
      "--dataset"),
]

TRAIN = [
    C("train-config-empty", "train {suite} --out {res}", "", "'name'", "missing"),
    C("train-config-not-utf8", "train {suite} --out {res}", b"name: caf\xe9\n", "(file)",
      "not UTF-8"),
    C("train-config-is-a-list", "train {suite} --out {res}", "- a\n", "(file)", "mapping"),
    C("train-config-bad-yaml", "train {suite} --out {res}", "name: [x\n", "(file)",
      "not valid YAML"),
    C("train-config-float-as-text", "train {suite} --out {res}", "name: x\nlr: 1e-3\n", "'lr'",
      "0.001"),
    C("train-config-string-steps", "train {suite} --out {res}", "name: x\nmax_steps: many\n",
      "'max_steps'", "'many'"),
    C("train-config-unknown-field", "train {suite} --out {res}", "name: x\nlrate: 0.1\n",
      "'lrate'", "'lr'"),
    C("train-set-bad-list", "train fmnist-v --set block_out_channels=[a] --out {res}", None,
      "'block_out_channels'"),
    C("train-config-missing", "train {tmp}/nope.yaml --out {res}", None, "nope.yaml",
      "not found"),
]

CASES = (SUITE_FILES + TOP_LEVEL + NUMBERS + ENTRIES + BLOCKS + INCLUDES + SETS + ARGUMENTS
         + REPORT + COMPARE + RUNS + FIDELITY + TRAIN)


# -------------------------------------------------------------------------------- fixtures
def _png(path: Path, size: int = 8, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    """A results folder with the rows and manifest of one tiny run."""
    from bench.cli import main

    d = tmp_path_factory.mktemp("rows")
    (d / "s.yaml").write_text(yaml.safe_dump(S()))
    assert main(["run", str(d / "s.yaml"), "--results", str(d / "results")]) == 0
    return d / "results"


def _copy_rows(rows: Path, dst: Path) -> Path:
    """The rows and run manifests of ``rows`` (not its shard state)."""
    shutil.copytree(rows / "tiny", dst / "tiny")
    shutil.copytree(rows / "_runs", dst / "_runs")
    return dst


@pytest.fixture
def workspace(tmp_path: Path, rows: Path) -> Path:
    """The files the cases refer to as {tmp}/NAME."""
    trunc = _copy_rows(rows, tmp_path / "rows_trunc") / "tiny"
    data = next(trunc.glob("*.parquet")).read_bytes()
    (trunc / "cut.parquet").write_bytes(data[: len(data) // 2])
    foreign = _copy_rows(rows, tmp_path / "rows_foreign") / "tiny"
    pd.DataFrame({"a": [1]}).to_parquet(foreign / "zz.parquet")
    first = _copy_rows(rows, tmp_path / "rows_foreign_first") / "tiny"
    pd.DataFrame({"a": [1]}).to_parquet(first / "00.parquet")
    bad = _copy_rows(rows, tmp_path / "rows_badmanifest") / "_runs"
    (bad / "29991231-000000-abcdef.json").write_text("{not json")
    badfit = _copy_rows(rows, tmp_path / "rows_badfit") / "_runs"
    for m in badfit.glob("*.json"):
        manifest = json.loads(m.read_text())
        manifest["report"] = {"fit_min_nfe": "x"}
        m.write_text(json.dumps(manifest))
    (tmp_path / "empty").mkdir()
    (tmp_path / "adir").mkdir()
    (tmp_path / "norows" / "_runs").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not a table\n")
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "other.parquet")
    for name in ("imgs", "imgs_bad", "imgs_trunc"):
        (tmp_path / name).mkdir()
    for i in range(3):
        _png(tmp_path / "imgs" / f"{i}.png", seed=i)
        _png(tmp_path / "imgs_bad" / f"{i}.png", seed=i)
    (tmp_path / "imgs_bad" / "garbage.png").write_bytes(b"this is not a PNG file")
    _png(tmp_path / "imgs_trunc" / "cut.png", size=64)
    data = (tmp_path / "imgs_trunc" / "cut.png").read_bytes()
    (tmp_path / "imgs_trunc" / "cut.png").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "scalar.npy", np.array(3))
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 truncated zip")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(S()))
    (tmp_path / "cycle_a.yaml").write_text("include: cycle_b.yaml\n")
    (tmp_path / "cycle_b.yaml").write_text("include: cycle_a.yaml\n")
    (tmp_path / "latin1.yaml").write_bytes("description: caf\xe9\n".encode("latin-1"))
    for i in range(30):  # each level includes the next twice: 2^30 reads unless bounded
        (tmp_path / f"bomb{i}.yaml").write_text(f"include: [bomb{i + 1}.yaml, bomb{i + 1}.yaml]\n"
                                                if i < 29 else "description: x\n")
    return tmp_path


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")} if root.exists() else {}


def _fill(arg: str, **where: Path) -> str:
    for k, v in where.items():
        arg = arg.replace("{" + k + "}", str(v))
    return arg


# ----------------------------------------------------------------------------------- tests
def test_catalogue_is_large_and_ids_are_unique():
    ids = [p.values[0].id for p in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES)
def test_hostile_input(case: Case, cli, workspace: Path, rows: Path):
    suite = workspace / "suite.yaml"
    if case.suite is not None:
        if isinstance(case.suite, bytes):
            suite.write_bytes(case.suite)
        else:
            suite.write_text(case.suite if isinstance(case.suite, str)
                             else yaml.safe_dump(case.suite))
    res = workspace / "res"
    before = _tree(rows)
    code, out, err = cli(*(_fill(a, suite=suite, res=res, rows=rows, tmp=workspace)
                           for a in case.args))
    assert "Traceback" not in out + err, err
    assert code == case.code, (out, err)
    if case.code == 2:
        assert err.startswith("error: "), err
        assert err.endswith("\n") and err.count("\n") == 1, err  # one paragraph
        assert not out, out
        for part in case.expect:
            assert _fill(part, tmp=workspace) in err, (part, err)
    assert not res.exists(), sorted(p.name for p in res.iterdir())  # nothing was written
    assert _tree(rows) == before


def test_run_into_read_only_results_folder(cli, write_suite, tmp_path, monkeypatch):
    """Checked before any work; as root (permissions do not apply) os.access is faked."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro
                            else real(p, mode, **kw))
    try:
        for target in (ro, ro / "sub"):
            code, out, err = cli("run", write_suite(S()), "--results", target)
            assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
            assert f"--results '{target}'" in err and "not writable" in err
            assert list(ro.iterdir()) == []
        # bench plan only reads the folder: a read-only one is fine
        assert cli("plan", write_suite(S()), "--results", ro)[0] == 0
    finally:
        ro.chmod(0o755)


def test_corrupt_generated_image_names_the_file(tmp_path):
    """The generated side's images are decoded batch by batch (after the reference is built,
    which the catalogue does not do: it needs the Inception weights); the error names the file."""
    from bench.data import open_dataset
    from bench.errors import BenchError

    (tmp_path / "g").mkdir()
    _png(tmp_path / "g" / "a.png")
    (tmp_path / "g" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = open_dataset(str(tmp_path / "g"))
    with pytest.raises(BenchError, match=r"b\.png.*cannot be decoded"):
        list(ds.batches(8))


def _nan_results(rows: Path, dst: Path) -> Path:
    """A copy of the tiny run's results with three more cells: value NaN, +inf and -inf."""
    shutil.copytree(rows, dst)
    f = next((dst / "tiny").glob("*.parquet"))
    df = pd.read_parquet(f)
    extra = []
    for nfe, v in ((20, float("nan")), (40, float("inf")), (80, float("-inf"))):
        r = df.iloc[[0]].copy()
        r["nfe"], r["nfe_counted"], r["steps"] = nfe, nfe, nfe
        r["value"] = v
        extra.append(r)
    pd.concat([df, *extra], ignore_index=True).to_parquet(dst / "tiny" / "extra.parquet")
    return dst


def test_report_renders_non_finite_values(cli, rows, tmp_path):
    res = _nan_results(rows, tmp_path / "nan")
    code, out, err = cli("report", res, "--out", tmp_path / "rep")
    assert code == 0, err
    md = (tmp_path / "rep" / "tiny.md").read_text()
    cells = {c.strip().strip("*_") for line in md.splitlines() if line.startswith("| ")
             for c in line.split("|")}
    assert {"NaN", "inf", "-inf"} <= cells  # shown as such (no interval around a non-number)
    assert "3 value(s) are not finite" in md and "the plot and the slope fit leave them out" in md
    assert any(p.suffix == ".png" for p in (tmp_path / "rep").iterdir())


def test_compare_flags_a_non_finite_current_value(cli, rows, tmp_path):
    cur = tmp_path / "cur.parquet"
    df = pd.read_parquet(rows)
    df["value"] = float("nan")
    df.to_parquet(cur)
    code, out, err = cli("compare", rows, cur)
    assert code == 1 and "Traceback" not in err and "NON-FINITE" in out, (out, err)
