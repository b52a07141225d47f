"""Sweeps: a list (or ``{sweep: [..]}``) in a model's or sampler's params expands into entries.

Rule: a plain list at a parameter that takes one value (int/float/str/bool, or
guidance.scale/cond/batched) is a sweep; ``{sweep: [..]}`` sweeps any parameter that does not
take a list; a list at a parameter that takes a list (gmm's shape, means) is its value.
"""

from __future__ import annotations

import copy
import json
import pandas as pd
import pytest
import yaml

from bench.errors import SuiteError
from bench.registry import MODELS, SAMPLERS, load_all
from bench.suite import MAX_SWEEP_ENTRIES, content_hash, load_suite, param_kinds, plan, validate
from conftest import ROOT, small_suite

GMM = {"name": "gmm", "label": "g", "params": {"shape": [2], "components": 2}}
DPM = {"name": "dpmpp_2m", "params": {"lower_order_below": [10, 15]}}


def gmm(label: str = "g", **params) -> dict:
    m = copy.deepcopy(GMM)
    m["label"] = label
    m["params"].update(params)
    m["params"] = {k: v for k, v in m["params"].items() if v is not None}
    return m


def tiny(**over) -> dict:
    """One cheap cell per (model, sampler): gmm on R^2, 8 samples, NFE 4."""
    return small_suite(**{"samples": 8, "nfe": [4], "models": [gmm()], "samplers": ["ddim"],
                          **over})


def refused(data: dict, *needles: str) -> str:
    with pytest.raises(SuiteError) as info:
        plan(validate(data, "s.yaml"))
    msg = str(info.value)
    for n in needles:
        assert n in msg, (n, msg)
    assert "Fix:" in msg
    return msg


# ------------------------------------------------------------------------------ expansion
def test_plain_lists_at_scalar_params_expand_into_labelled_entries():
    s = validate(tiny(models=[gmm(guidance={"scale": [1, 2, 4, 7.5], "batched": False})],
                      samplers=["ddim", DPM]),
                 "s.yaml")
    assert [m["label"] for m in s.models] == ["g[guidance.scale=1]", "g[guidance.scale=2]",
                                             "g[guidance.scale=4]", "g[guidance.scale=7.5]"]
    # each entry has the params as if written with that one value (siblings kept, as written)
    assert [m["params"]["guidance"] for m in s.models] == [
        {"scale": w, "batched": False} for w in (1, 2, 4, 7.5)]
    assert all(m["params"]["shape"] == [2] for m in s.models)  # a list value, not swept
    assert [x["label"] for x in s.samplers] == ["ddim", "dpmpp_2m[lower_order_below=10]",
                                               "dpmpp_2m[lower_order_below=15]"]
    assert s.model_origin == [0, 0, 0, 0] and s.sampler_origin == [0, 1, 1]
    assert len(s.adapters) == 4 and [a.guidance["scale"] for a in s.adapters] == [1, 2, 4, 7.5]
    assert len({c.cell_key for c in plan(s)}) == 4 * 3


def test_sweep_marker_and_several_lists_give_the_product_with_the_users_label():
    s = validate(tiny(samplers=[{"name": "euler", "label": "eu",
                                 "params": {"s_churn": {"sweep": [0, 0.5]}, "s_noise": [1.0, 1.01],
                                            "s_tmin": 0.0}}]), "s.yaml")
    assert [x["label"] for x in s.samplers] == [
        "eu[s_churn=0,s_noise=1.0]", "eu[s_churn=0,s_noise=1.01]",
        "eu[s_churn=0.5,s_noise=1.0]", "eu[s_churn=0.5,s_noise=1.01]"]
    assert s.samplers[3]["params"] == {"s_churn": 0.5, "s_noise": 1.01, "s_tmin": 0.0}
    # the marker works where a plain list would be a value or is unknown: a mapping parameter
    s = validate(tiny(models=[gmm(guidance={"sweep": [{"scale": 1}, {"scale": 3, "cond": 1}]})]),
                 "s.yaml")
    assert [m["params"]["guidance"] for m in s.models] == [{"scale": 1}, {"scale": 3, "cond": 1}]
    assert s.models[1]["label"] == 'g[guidance={"cond":1,"scale":3}]'


def test_a_list_that_is_a_value_is_not_expanded_and_validates_as_before():
    means = [[0.0, 0.0], [1.0, 2.0]]
    s = validate(tiny(models=[gmm(shape=[2], means=means, covs=[1.0, 0.5], weights=[1, 3],
                                  components=None)],
                      evals=[{"name": "nfe_curve", "params": {"metrics": ["oracle_rmse"],
                                                              "slices": ["all"]}}]), "s.yaml")
    assert len(s.models) == 1 and s.models[0]["label"] == "g" and not s.sweeps
    assert s.models[0]["params"]["means"] == means and s.models[0]["params"]["weights"] == [1, 3]
    assert len(s.evals) == 1 and s.evals[0]["params"]["metrics"] == ["oracle_rmse"]
    # which parameters take one value (a list there sweeps) and which take a list
    load_all()
    kinds = param_kinds(MODELS.entry("gmm"))
    assert (kinds["shape"], kinds["means"], kinds["var_min"], kinds["guidance"]) == \
        ("list", "list", "scalar", "other")
    assert param_kinds(SAMPLERS.entry("unipc"))["lower_order_below"] == "scalar"  # int | None
    assert param_kinds(SAMPLERS.entry("diffusers"))["config"] == "other"


def test_set_override_can_sweep(write_suite):
    p = write_suite(tiny(models=[gmm(guidance={"scale": 2})]))
    s = load_suite(p, ["models.0.params.guidance.scale=[1, 2]", "samplers.0.params.eta=[0, 1]"])
    assert [m["label"] for m in s.models] == ["g[guidance.scale=1]", "g[guidance.scale=2]"]
    assert [x["label"] for x in s.samplers] == ["ddim[eta=0]", "ddim[eta=1]"]


# ------------------------------------------------------------------------------ cell keys
def test_swept_cell_has_the_keys_of_the_same_cell_written_without_a_sweep(write_suite):
    one = tiny(models=[gmm("g[guidance.scale=2]", guidance={"scale": 2})],
               samplers=[{"name": "ddim", "label": "ddim[eta=0.5]", "params": {"eta": 0.5}}])
    swept = tiny(models=[gmm(guidance={"scale": [1, 2]})],
                 samplers=[{"name": "ddim", "params": {"eta": [0.0, 0.5]}}])
    a = plan(load_suite(write_suite(one, "one.yaml")))
    b = plan(load_suite(write_suite(swept, "swept.yaml")))
    assert len(a) == 1 and len(b) == 4
    same = [c for c in b if (c.model["label"], c.sampler["label"]) ==
            ("g[guidance.scale=2]", "ddim[eta=0.5]")]
    assert [(c.key, c.cell_key) for c in same] == [(c.key, c.cell_key) for c in a]
    assert not {c.key for c in b if c not in same} & {c.key for c in a}  # other values differ
    # another suite, default labels: the same computation (shared shards), its own rows
    other = tiny(name="other", models=[gmm(guidance={"scale": 2})],
                 samplers=[{"name": "ddim", "params": {"eta": 0.5}}])
    c = plan(load_suite(write_suite(other, "other.yaml")))
    assert c[0].key == a[0].key and c[0].cell_key != a[0].cell_key


def test_shipped_suite_without_sweeps_keeps_its_cell_keys(monkeypatch):
    """quickstart plans exactly as written: entries, labels and keys as without sweep support."""
    import bench.suite as suite_mod

    path = ROOT / "suites" / "quickstart.yaml"
    raw = yaml.safe_load(path.read_text())
    s = load_suite(path)
    shards = plan(s)
    assert not s.sweeps and len(s.models) == len(raw["models"]) and \
        len(s.samplers) == len(raw["samplers"])
    # the key formula on the entries as written (name, params, label from the YAML)
    for c in shards:
        m = raw["models"][0]
        smp = {"name": c.sampler["name"], "params": {}, "grid": c.sampler["grid"]}
        assert c.sampler["name"] in raw["samplers"] and c.sampler["label"] == c.sampler["name"]
        compute = {"model": {"name": m["name"], "params": m["params"]}, "model_hash": c.model_hash,
                   "sampler": smp, "steps": c.steps, "eval": c.eval, "seed": raw["seed"],
                   "code": c.code, "conditions": None}
        assert c.key == content_hash({**compute, "range": [c.start, c.stop]})
        assert c.cell_key == content_hash({**compute, "suite": "quickstart", "nfe": c.nfe,
                                           "samples": raw["samples"],
                                           "labels": [m["label"], c.sampler["name"]]})
    # and the planner with sweep expansion switched off gives the same plan
    monkeypatch.setattr(suite_mod, "_expand",
                        lambda src, where, params, entry, what, room: ([(params, [])], {}))
    before = plan(load_suite(path))
    assert [(c.key, c.cell_key, c.label()) for c in before] == \
        [(c.key, c.cell_key, c.label()) for c in shards]


# ------------------------------------------------------------------------------ a run
def test_swept_run_reuses_unswept_shards_and_rows_record_the_values(cli, write_suite, tmp_path):
    res = tmp_path / "res"
    one = write_suite(tiny(models=[gmm(guidance={"scale": 2})],
                           samplers=[{"name": "ddim", "params": {"eta": 0.5}}]), "one.yaml")
    code, out, err = cli("run", one, "--executor", "debug", "--results", res)
    assert code == 0 and "1 computed" in out, (out, err)
    swept = write_suite(tiny(models=[gmm(guidance={"scale": [1, 2]})],
                             samplers=[{"name": "ddim", "params": {"eta": [0.0, 0.5]}}]), "sw.yaml")
    code, out, err = cli("run", swept, "--executor", "debug", "--results", res)
    assert code == 0 and "3 computed, 1 already done" in out, (out, err)
    rows = pd.read_parquet(res / "tiny")
    got = {(r.model, r.sampler): (json.loads(r.model_params)["guidance"]["scale"],
                                  json.loads(r.sampler_params)["eta"])
           for r in rows.itertuples() if r.model != "g"}
    assert got == {("g[guidance.scale=1]", "ddim[eta=0.0]"): (1, 0.0),
                   ("g[guidance.scale=1]", "ddim[eta=0.5]"): (1, 0.5),
                   ("g[guidance.scale=2]", "ddim[eta=0.0]"): (2, 0.0),
                   ("g[guidance.scale=2]", "ddim[eta=0.5]"): (2, 0.5)}
    # the shared shard gives the same number under both labels
    val = rows.groupby(["model", "sampler", "metric"])["value"].first()
    assert val[("g", "ddim", "rmse")] == val[("g[guidance.scale=2]", "ddim[eta=0.5]", "rmse")]


def test_plan_prints_the_expanded_entries(cli, write_suite, tmp_path):
    p = write_suite(tiny(models=[gmm(guidance={"scale": [1, 2, 4, 7.5]})],
                         samplers=["ddim", DPM]))
    code, out, err = cli("plan", p, "--results", tmp_path / "r")
    assert code == 0, err
    assert "4 model(s) x 3 sampler(s) x 1 NFE x 1 eval(s): 12 cell(s)" in out
    assert ("sweep models[0] (g): guidance.scale in [1, 2, 4, 7.5] -> 4 entries: "
            "g[guidance.scale=1], g[guidance.scale=2], g[guidance.scale=4], g[guidance.scale=7.5]"
            ) in out
    assert ("sweep samplers[1] (dpmpp_2m): lower_order_below in [10, 15] -> 2 entries: "
            "dpmpp_2m[lower_order_below=10], dpmpp_2m[lower_order_below=15]") in out
    code, out, _ = cli("plan", write_suite(tiny(), "plain.yaml"), "--results", tmp_path / "r")
    assert code == 0 and "sweep" not in out


# ------------------------------------------------------------------------------ bad input
def test_bad_sweeps_are_refused_before_any_work(cli, write_suite, tmp_path):
    p = write_suite(tiny(samplers=[{"name": "ddim", "params": {"eta": []}}]))
    code, out, err = cli("run", p, "--results", tmp_path / "res")
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert "samplers[0].params.eta" in err and "empty list" in err and "sweep" in err
    assert not (tmp_path / "res").exists()


def test_empty_sweep():
    refused(tiny(models=[gmm(guidance={"scale": []})]),
            "models[0].params.guidance.scale", "empty list", "takes one value", "a sweep")
    refused(tiny(samplers=[{"name": "ddim", "params": {"eta": {"sweep": []}}}]),
            "samplers[0].params.eta", "empty sweep", "{sweep: [1, 2]}")


def test_sweep_over_a_parameter_that_does_not_exist():
    refused(tiny(samplers=[{"name": "ddim", "params": {"etta": [0, 1]}}]),
            "samplers[0].params.etta", "[0, 1]", "not a parameter of sampler 'ddim'",
            "cannot be swept", "Did you mean 'eta'?", "sweep one of: eta")
    refused(tiny(models=[gmm(guidance={"scal": [1, 2]})]),
            "models[0].params.guidance.scal", "not a field of guidance", "'scale'",
            "guidance.scale")
    refused(tiny(samplers=[{"name": "ddim", "params": {"etta": {"sweep": [0, 1]}}}]),
            "samplers[0].params.etta", "cannot be swept")


def test_duplicate_values():
    refused(tiny(samplers=[{"name": "ddim", "params": {"eta": [0.5, 0.2, 0.5]}}]),
            "samplers[0].params.eta", "0.5 twice", "list each value once")
    refused(tiny(models=[gmm(guidance={"scale": {"sweep": [1, 1.0]}})]),
            "models[0].params.guidance.scale", "1 and 1.0, the same value")
    # distinct sweeps that meet on one label
    refused(tiny(samplers=[{"name": "ddim", "params": {"eta": [0, 1]}},
                           {"name": "ddim", "params": {"eta": [1, 2]}}]),
            "'samplers'", "same label ['ddim[eta=1]']", "LABEL[param=value]")


def test_sweep_too_large():
    msg = refused(tiny(samplers=[{"name": "euler", "params": {
        "s_churn": [i / 10 for i in range(40)], "s_noise": [1 + i / 100 for i in range(30)]}}]),
        "samplers[0].params", "1,200 entries", "s_churn 40 x s_noise 30", f"{MAX_SWEEP_ENTRIES:,}")
    assert "fewer values" in msg
    refused(tiny(samplers=[{"name": "ddim", "params": {"eta": [i / 1000 for i in range(600)]}},
                           {"name": "euler", "params": {"s_churn": [i / 10 for i in range(600)]}}]),
            "samplers[1].params", "600 entries", "entries before it to 600")
    assert MAX_SWEEP_ENTRIES == 1000
    at_bound = [{"name": "ddim", "params": {"eta": [i / 1000 for i in range(1000)]}}]
    s = validate(tiny(samplers=at_bound), "s.yaml")
    assert len(s.samplers) == 1000


def test_sweep_on_a_parameter_that_takes_a_list():
    refused(tiny(models=[gmm(shape={"sweep": [[2], [4]]})]),
            "models[0].params.shape", "takes a list for 'shape'", "cannot be swept",
            "one model entry per value")
    refused(tiny(models=[gmm(components=None, means=[[0, 0], {"sweep": [[1, 1], [2, 2]]}])]),
            "models[0].params.means.1", "takes a list for 'means'")


def test_sweeps_outside_model_and_sampler_params_and_malformed_markers():
    refused(tiny(evals=[{"name": "nfe_curve", "params": {"gallery": {"sweep": [0, 4]}}}]),
            "evals[0].params.gallery", "only the params of models and samplers")
    refused(tiny(samplers=[{"name": "heun", "grid": {"name": "karras", "rho": {"sweep": [5, 7]}}}]),
            "samplers[0].grid.rho", "not 'grid'")
    refused(tiny(samplers=[{"name": "ddim", "params": {"eta": {"sweep": [0, 1], "x": 1}}}]),
            "samplers[0].params.eta", "one key 'sweep'")
    refused(tiny(samplers=[{"name": "ddim", "params": {"eta": {"sweep": 3}}}]),
            "samplers[0].params.eta", "must list the values")
    refused(tiny(samplers=[{"name": "ddim", "params": {"eta": {"sweep": [0, {"sweep": [1]}]}}}]),
            "samplers[0].params.eta", "sweep inside a sweep")


def test_bad_swept_value_names_the_written_entry_and_the_expanded_label():
    refused(tiny(models=[gmm(guidance={"scale": 2, "cond": [0, 5]})]),
            "models[0].params", "swept entry 'g[guidance.cond=5]'", "guidance.cond")
    # the second written sampler (the fourth expanded one) fails its dry run
    refused(tiny(samplers=[{"name": "euler", "params": {"s_noise": [1.0, 1.01]}},
                           {"name": "ddim", "params": {"eta": [0.0, -1]}}]),
            "field 'samplers[1].params'", "sampler 'ddim[eta=-1]'", "eta must be >= 0")
