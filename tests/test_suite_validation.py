"""Bad suite files: one-paragraph errors naming file, field, value and fix; exit code 2."""

import pandas as pd
import pytest

from bench.suite import apply_sets, load_suite, plan
from conftest import small_suite


def _err(cli, path, *extra):
    code, out, err = cli("run", path, "--results", path.parent / "res", *extra)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one paragraph
    assert not (path.parent / "res").exists()  # nothing was run or written
    return err


def test_unknown_sampler_suggests_close_name(cli, write_suite):
    p = write_suite(small_suite(samplers=["ddim", "huen"]))
    err = _err(cli, p)
    assert str(p) in err and "samplers[1].name" in err and "'huen'" in err
    assert "Did you mean 'heun'?" in err and "Fix:" in err


def test_nfe_zero(cli, write_suite):
    err = _err(cli, write_suite(small_suite(nfe=[10, 0])))
    assert "nfe[1]" in err and "got 0" in err and ">= 1" in err


def test_missing_field(cli, write_suite):
    data = small_suite()
    del data["samplers"]
    err = _err(cli, write_suite(data))
    assert "'samplers'" in err and "missing" in err


def test_wrong_type(cli, write_suite):
    err = _err(cli, write_suite(small_suite(samples="many")))
    assert "'samples'" in err and "'many'" in err and "integer" in err


def test_unreadable_yaml(cli, write_suite):
    err = _err(cli, write_suite("name: x\nmodels: [gmm\nsamplers: {"))
    assert "not valid YAML" in err and "line" in err


def test_missing_file(cli, tmp_path):
    code, _, err = cli("run", tmp_path / "nope.yaml")
    assert code == 2 and "does not exist" in err


def test_unknown_top_level_field_and_param(cli, write_suite):
    err = _err(cli, write_suite({**small_suite(), "sample": 3}))
    assert "'sample'" in err and "Did you mean 'samples'" in err
    bad = small_suite(samplers=[{"name": "ddim", "params": {"etta": 1}}])
    err = _err(cli, write_suite(bad))
    assert "samplers[0].params.etta" in err and "'eta'" in err


def test_unreachable_nfe_is_rejected_unless_rounding_is_explicit(cli, write_suite):
    err = _err(cli, write_suite(small_suite(nfe=[10], nfe_rounding="error", samplers=["heun"])))
    assert "nfe[0]" in err and "heun" in err and "nfe_rounding" in err
    code, out, err = cli("plan", write_suite(small_suite(nfe=[10], samplers=["heun"])))
    assert code == 0 and "NFE 10 rounded down to 9" in out


def test_include_and_set_overrides(write_suite, tmp_path):
    write_suite(small_suite(samples=99, seed=5), name="base.yaml")
    child = write_suite({"include": "base.yaml", "name": "child", "nfe": [4]}, name="child.yaml")
    s = load_suite(child, ["samples=7", "samplers=[euler]", "models.0.params.cov=diag"])
    assert (s.name, s["samples"], s["seed"], s["nfe"]) == ("child", 7, 5, [4])
    assert [x["name"] for x in s.samplers] == ["euler"]
    assert s.models[0]["params"]["cov"] == "diag"
    assert len(plan(s)) == 1


def test_set_with_a_bad_path_names_it():
    from bench.errors import SuiteError

    with pytest.raises(SuiteError, match="models.5"):
        apply_sets(small_suite(), ["models.5.params.cov=full"])
    with pytest.raises(SuiteError, match="key=value"):
        apply_sets(small_suite(), ["samples"])


def test_cell_keys_ignore_batch_size_but_not_seed(write_suite):
    a = plan(load_suite(write_suite(small_suite())))
    b = plan(load_suite(write_suite(small_suite(batch_size=3), name="b.yaml")))
    c = plan(load_suite(write_suite(small_suite(seed=4), name="c.yaml")))
    assert [x.key for x in a] == [x.key for x in b]
    assert not {x.key for x in a} & {x.key for x in c}
    assert len({x.key for x in a}) == len(a) == 8


def test_shards_cover_samples_exactly(write_suite):
    cells = plan(load_suite(write_suite(small_suite(samples=25, shard_size=10, nfe=[10],
                                                    samplers=["ddim"]))))
    assert [(c.start, c.stop) for c in cells] == [(0, 10), (10, 20), (20, 25)]
    assert len({c.cell_key for c in cells}) == 1 and len({c.key for c in cells}) == 3


def test_dpm_solver_fast_order_in_params_is_the_grid_order(write_suite):
    """A choice the grid depends on is stated once, in the sampler's params."""
    fast = {"name": "dpm_solver_fast", "params": {"order": 2}}
    s = load_suite(write_suite(small_suite(samplers=[fast, {**fast, "label": "default",
                                                            "params": {}}])))
    cells = plan(s)
    two = [c for c in cells if c.sampler["label"] == "dpm_solver_fast"]
    assert two and all(c.sampler["grid"] == {"name": "dpm_fast", "order": 2} for c in two)
    dflt = [c for c in cells if c.sampler["label"] == "default"]
    assert dflt and all(c.sampler["grid"] == {"name": "dpm_fast", "order": 3} for c in dflt)
    # the same value in both places is accepted; other grid fields are kept
    same = {**fast, "grid": {"name": "dpm_fast", "order": 2, "skip": "time_uniform"}}
    grid = load_suite(write_suite(small_suite(samplers=[same]), name="b.yaml")).samplers[0]["grid"]
    assert grid == {"name": "dpm_fast", "order": 2, "skip": "time_uniform"}


def test_grid_order_that_contradicts_sampler_params_names_field_values_and_fix(cli, write_suite):
    from bench.errors import SuiteError

    bad = {"name": "dpm_solver_fast", "params": {"order": 2}, "grid": {"name": "dpm_fast", "order": 3}}
    p = write_suite(small_suite(samplers=["ddim", bad]))
    with pytest.raises(SuiteError) as exc:
        load_suite(p)
    assert exc.value.field == "samplers[1].grid.order"
    assert "3" in exc.value.problem and "order=2" in exc.value.problem
    assert "state it once, in params" in exc.value.fix
    err = _err(cli, p)
    assert "samplers[1].grid.order" in err and "state it once, in params" in err
    # a grid order against the sampler's default (3) is a contradiction too
    only_grid = {"name": "dpm_solver_fast", "grid": {"name": "dpm_fast", "order": 2}}
    with pytest.raises(SuiteError, match=r"samplers\[0\]\.grid\.order.*order=3"):
        load_suite(write_suite(small_suite(samplers=[only_grid]), name="b.yaml"))


def test_diffusers_scheduler_in_params_only_gives_its_grid(write_suite):
    from bench.errors import SuiteError

    smp = {"name": "diffusers", "params": {"scheduler": "DDIMScheduler"}}
    models = [{"name": "gmm", "label": "g", "params": {"shape": [1, 4, 4], "schedule": "discrete"}}]
    s = load_suite(write_suite(small_suite(samplers=[smp], models=models)))
    assert s.samplers[0]["grid"] == {"name": "diffusers", "scheduler": "DDIMScheduler"}
    assert all(c.sampler["grid"]["scheduler"] == "DDIMScheduler" for c in plan(s))
    cfg = {"name": "diffusers", "params": {"scheduler": "DDIMScheduler",
                                           "config": {"clip_sample": False}}}
    s = load_suite(write_suite(small_suite(samplers=[cfg], models=models), name="b.yaml"))
    assert s.samplers[0]["grid"] == {"name": "diffusers", "scheduler": "DDIMScheduler",
                                     "config": {"clip_sample": False}}
    other = {**smp, "grid": {"name": "diffusers", "scheduler": "PNDMScheduler"}}
    with pytest.raises(SuiteError, match=r"samplers\[0\]\.grid\.scheduler.*PNDMScheduler.*"
                                         r"DDIMScheduler"):
        load_suite(write_suite(small_suite(samplers=[other], models=models), name="c.yaml"))


def test_alias_bombs_hidden_names_and_non_utf8_are_refused(cli, write_suite, tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefghijk", "bcdefghijkl"))  # 110 aliases, 10^12 leaves
    code, _, err = cli("plan", write_suite(bomb, "bomb.yaml"))
    assert code == 2 and "more than 100 aliases" in err and "Traceback" not in err
    for name in ("_hidden", "-dash", "café", "a/b"):
        code, _, err = cli("plan", write_suite(small_suite(name=name), "n.yaml"))
        assert code == 2 and "field 'name'" in err, name
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = cli("plan", p)
    assert code == 2 and "not UTF-8" in err
