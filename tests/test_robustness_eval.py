"""The loop eval ``robustness`` end to end on the keyword oracle (``gmm-keyword``): rows, the
per-query table, success only on the keyword, a kill mid-prompt resuming to identical rows,
and bad input refused before any work."""

from __future__ import annotations

import copy
import subprocess

import numpy as np
import pandas as pd

from bench.store import read_samples
from conftest import ROOT, debug_run_cmd, kill_at_first_checkpoint, small_suite

KEYWORD = {"name": "gmm-keyword", "label": "kw",
           "params": {"keywords": ["boot", "coat"], "shape": [2], "means": [[1.5, 1.5], [-1.5, -1.5]],
                      "covs": [0.05, 0.05]}}
PROMPTS = ["a worn leather boot in winter", "a long coat, belted", "of the, a"]
EVAL = {"name": "robustness", "params": {"rules": ["typo", "glyph"], "searches": ["greedy", "random"],
                                         "images": 16, "queries": 8, "candidates": 2,
                                         "budget": {"max_words": 1, "max_edit_fraction": 0.2},
                                         "objective": "mmd", "test": "mmd", "permutations": 99,
                                         "correction": "none", "clip": None}}


def attack_suite(**over) -> dict:
    suite = small_suite(name="rob", samples=len(PROMPTS), batch_size=6, nfe=[8], models=[KEYWORD],
                        samplers=["ddim"], evals=[EVAL], conditions={"prompts": PROMPTS})
    suite.update(over)
    return copy.deepcopy(suite)


def test_attacks_on_the_keyword_oracle(cli, write_suite, tmp_path):
    code, out, err = cli("run", write_suite(attack_suite()), "--results", tmp_path / "r")
    assert code == 0, err
    rows = pd.read_parquet(tmp_path / "r")
    rate = rows[rows["metric"] == "attack_success_rate"].set_index("slice")
    # two attackable prompts of three: greedy finds the keyword in both, within 8 queries
    for rule in ("typo", "glyph"):
        r = rate.loc[f"rule={rule},search=greedy"]
        assert r["value"] == 2 / 3 and r["n_samples"] == 3
        assert 0 < r["ci_low"] < 2 / 3 < r["ci_high"] < 1
    assert rate.loc["search=greedy", "value"] == 2 / 3
    assert rate.loc["search=random", "value"] <= 2 / 3
    table = read_samples(tmp_path / "r", "rob")
    results = table[table["phase"] == "result"]
    assert len(results) == 3 * 2 * 2
    for _, r in results.iterrows():
        if r["success"]:  # only the keyword was changed
            assert "boot" not in r["candidate"].split() and "coat" not in r["candidate"].replace(",", " ").split()
            assert r["edit_distance"] >= 1
    stop_only = results[results["cond_text"] == "of the, a"]
    assert (stop_only["note"] == "no perturbable word").all() and not stop_only["success"].any()
    steps = table[table["phase"] != "result"]
    assert (steps.groupby(["cond_id", "rule", "search"]).size() <= 8).all()
    # every query that changed a non-keyword word left the samples' distribution alone
    imp = steps[steps["phase"] == "importance"]
    boot = imp[imp["cond_text"] == PROMPTS[0]]
    assert set(boot[boot["p_value"] < 0.05]["candidate"]) == {"a worn leather in winter"}
    per_attack = rows[rows["metric"] == "attack_success"]
    assert len(per_attack) == 12 and per_attack["slice"].str.startswith("prompt=").all()
    # success within q queries: rises with q, ends at the overall rate, and counts the queries
    # up to each attack's first success
    to_success = rows[rows["metric"] == "attack_queries_to_success"].set_index("slice")["value"]
    assert to_success.notna().sum() == int(per_attack["value"].sum())
    for search in ("greedy", "random"):
        curve = [rate.loc[f"search={search},within={q}", "value"] for q in range(1, 9)]
        assert curve == sorted(curve) and curve[-1] == rate.loc[f"search={search}", "value"]
        mine = to_success[to_success.index.str.endswith(f"search={search}")]
        assert curve == [float((mine <= q).sum() / 6) for q in range(1, 9)]
    assert rate.loc["search=greedy,within=3", "value"] == 0  # 3-4 importance queries come first

    code, out, err = cli("report", tmp_path / "r", "--suite", "rob", "--out", tmp_path / "rep",
                         "--format", "md,latex")
    assert code == 0, err
    md = (tmp_path / "rep" / "rob.md").read_text()
    assert "Attack success rate" in md and "typo / greedy" in md and "all rules / random" in md
    assert "0.667 [" in md  # greedy's 2 of 3 with its Wilson interval
    assert "below 0.05 (uncorrected for the 8 queries per attack)" in md
    assert "Success within a query budget" in md and "q = 8" in md
    assert (tmp_path / "rep" / "rob_attack_budget_ddim_nfe8.png").is_file()
    assert (tmp_path / "rep" / "rob_attack_objectives.png").is_file()
    assert "\\begin{tabular}" in (tmp_path / "rep" / "rob.tex").read_text()


def test_bad_parameters_fail_plan(cli, write_suite):
    cases = (({"rules": ["leet"]}, "rules"), ({"budget": {"max_words": 0}}, "budget"),
             ({"queries": 0}, "queries"), ({"objective": "kl"}, "clip"),
             ({"searches": "beam"}, "searches"), ({"images": 1}, "images"),
             ({"correction": "holm"}, "correction"), ({"searches": ["greedy-text"]}, "searches"),
             # 1/100 cannot fall below 0.05 / 8 queries (Bonferroni)
             ({"correction": "bonferroni"}, "permutations"))
    for params, field in cases:
        suite = attack_suite()
        suite["evals"][0]["params"] = {**EVAL["params"], **params}
        code, _, err = cli("plan", write_suite(suite))
        assert code == 2 and f"evals[0].params.{field}" in err, (params, err)


def test_gallery_titles_name_glyph_swaps():
    from bench.report.robustness import visible

    assert visible("a dr\u0435ss, \U0001d41eh") == "a dr<U+0435>ss, <U+1D41E>h"
    assert visible("a plain dress") == "a plain dress"


def test_the_success_level_is_bonferroni_corrected_by_default():
    from bench.evals.robustness import Robustness, success_level

    assert success_level(0.05, 10, "bonferroni") == 0.005 and success_level(0.05, 10, "none") == 0.05
    assert Robustness(queries=10).level == 0.005
    assert Robustness(queries=10, correction="none", alpha=0.1).level == 0.1


def test_an_unconditional_model_is_refused(cli, write_suite, tmp_path):
    suite = attack_suite(models=[{"name": "gmm", "label": "g", "params": {"shape": [2]}}])
    code, _, err = cli("run", write_suite(suite), "--results", tmp_path / "r")
    assert code != 0 and "text-conditional" in err


def _state(folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = pd.read_parquet(folder).sort_values(["slice", "metric"])
    cols = ["slice", "metric", "step", "value", "ci_low", "ci_high", "n_samples"]
    table = read_samples(folder, "rob").drop(columns=["run_id"])
    return rows[cols].reset_index(drop=True), table.reset_index(drop=True)


def test_kill_mid_prompt_resumes_to_identical_rows(tmp_path):
    # a slower oracle (3x16x16 full covariances) and more queries: the kill lands mid-search
    slow = {**KEYWORD, "params": {"keywords": ["boot", "coat"], "shape": [3, 16, 16], "cov": "full",
                                  "var_min": 0.01}}
    ev = {"name": "robustness", "params": {**EVAL["params"], "queries": 12, "images": 24}}
    suite = attack_suite(models=[slow], evals=[ev], batch_size=24)
    cmd = debug_run_cmd(suite, tmp_path)
    assert subprocess.run(cmd + ["--results", str(tmp_path / "clean")], cwd=ROOT,
                          capture_output=True).returncode == 0
    clean = _state(tmp_path / "clean")

    res = tmp_path / "killed"
    kill_at_first_checkpoint(cmd + ["--results", str(res)], res, settle=0.3)
    assert not list(res.rglob("rob/*.parquet"))  # killed in the middle of the loop
    import json

    with np.load(next((res / "_partial").glob("*.npz"))) as z:
        meta = json.loads(str(z["__meta__"]))
    total = len(clean[1][clean[1]["phase"] != "result"])
    assert 1 <= len(meta["log"]) and len(meta["attacks"]) < 12, (len(meta["log"]), total)

    r = subprocess.run(cmd + ["--results", str(res)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    again = _state(res)
    pd.testing.assert_frame_equal(again[0], clean[0])
    pd.testing.assert_frame_equal(again[1], clean[1])
