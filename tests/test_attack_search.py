"""Attack search on a known answer: the keyword oracle (``gmm-keyword``), whose samples depend on
one word of the prompt only. Importance must rank that word first and only attacks on it may
succeed; the searches keep to their budgets and are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.models  # noqa: F401  (registers the models)

from bench.attacks.objectives import mmd_permutation_test
from bench.attacks.perturb import Budget, split_words
from bench.attacks.search import (Outcome, ablate, greedy_attack, greedy_text_attack, random_attack,
                                  word_importance)
from bench.conditions import Condition
from bench.errors import BenchError
from bench.generate import LoadedModel, SamplerSpec, generate

N = 16
SPEC = {"name": "gmm-keyword", "params": {"keywords": ["boot", "coat"], "shape": [2],
                                          "means": [[1.5, 1.5], [-1.5, -1.5]], "covs": [0.05, 0.05]}}


@pytest.fixture(scope="module")
def oracle() -> LoadedModel:
    return LoadedModel.load(SPEC, torch.device("cpu"))


def samples(model: LoadedModel, prompt: str) -> np.ndarray:
    """N samples of ``prompt`` from fixed initial noises (common random numbers)."""
    cond = [Condition(id="p", text=prompt)] * N
    gen = generate(model, SamplerSpec("ddim", {}, {"name": "time_uniform"}, 8), np.arange(N), 0, cond)
    return gen.samples.reshape(N, -1).numpy()


def make_query(model: LoadedModel, original: str, log: list[str] | None = None):
    base = samples(model, original)

    def query(prompt: str) -> Outcome:
        if log is not None:
            log.append(prompt)
        value, p = mmd_permutation_test(base, samples(model, prompt), n_permutations=99, seed=0)
        return Outcome(value, p, {"mmd2": value, "mmd_p": p})
    return query


def test_the_oracle_depends_on_the_keyword_only(oracle: LoadedModel) -> None:
    a = samples(oracle, "a photo of a leather boot")
    assert np.array_equal(a, samples(oracle, "the leather BOOT, photographed"))
    assert np.abs(a.mean(0) - 1.5).max() < 0.3
    assert np.abs(samples(oracle, "a coat").mean(0) + 1.5).max() < 0.3
    mixed = samples(oracle, "a leather bot")  # no keyword: the mixture
    assert not np.array_equal(a, mixed)
    assert oracle.adapter.component("Boot and coat") == 0 and oracle.adapter.component("coats") == -1
    with pytest.raises(BenchError, match="keywords"):
        LoadedModel.load({"name": "gmm-keyword", "params": {"keywords": ["two words"]}}, torch.device("cpu"))


def test_importance_ranks_the_keyword_first_over_random_prompts(oracle: LoadedModel) -> None:
    rng = np.random.default_rng(0)
    fillers = ["red", "leather", "photo", "worn", "shiny", "tall", "picture", "winter", "old", "muddy"]
    for trial in range(6):
        words = list(rng.choice(fillers, size=int(rng.integers(2, 5)), replace=False))
        at = int(rng.integers(0, len(words) + 1))
        prompt = " ".join(words[:at] + ["boot"] + words[at:])
        ranked = word_importance(prompt, make_query(oracle, prompt))
        key = next(w.index for w in split_words(prompt) if w.text == "boot")
        assert ranked[0][0] == key, (prompt, ranked)
        assert ranked[0][1].p_value < 0.05
        assert all(o.p_value > 0.5 for i, o in ranked[1:])  # identical samples: no change at all
    assert ablate("a  red boot, please", 2) == "a red , please"


@pytest.mark.parametrize("rule", ["typo", "glyph", "phonetic"])
def test_greedy_attacks_the_keyword_and_succeeds(oracle: LoadedModel, rule: str) -> None:
    prompt = "a worn leather boot in winter"
    log: list[str] = []
    res = greedy_attack(prompt, rule, make_query(oracle, prompt, log), queries=10, k=3,
                        budget=Budget(1, 0.2), seed=0)
    key = 3
    assert res.success and res.words_changed == (key,)
    assert [w.text for w in split_words(res.adversarial)][:3] == ["a", "worn", "leather"]
    assert res.adversarial != prompt and res.edit_distance >= 1
    assert res.queries == len(log) <= 10
    assert [s.prompt for s in res.steps] == log
    assert [s.phase for s in res.steps][:4] == ["importance"] * 4
    assert sum(s.accepted for s in res.steps) == 1
    # deterministic: the same search again asks the same queries
    again: list[str] = []
    assert greedy_attack(prompt, rule, make_query(oracle, prompt, again), queries=10, k=3,
                         budget=Budget(1, 0.2), seed=0) == res and again == log


def test_only_perturbing_the_keyword_succeeds_in_the_random_baseline(oracle: LoadedModel) -> None:
    prompt = "a worn leather boot in winter"
    res = random_attack(prompt, "typo", make_query(oracle, prompt), queries=12,
                        budget=Budget(1, 0.2), seed=3)
    assert res.queries <= 12
    for s in res.steps:
        changed = s.word_index
        assert (s.outcome.p_value < 0.05) == (changed == 3), (s.prompt, s.outcome)
    hits = [s for s in res.steps if s.outcome.p_value < 0.05]
    assert res.success == bool(hits)
    if hits:  # the search stops at its first success
        assert res.steps[-1] is hits[0] or res.steps[-1].prompt == hits[0].prompt


def test_budgets_and_no_candidate_outcomes(oracle: LoadedModel) -> None:
    prompt = "the boot"
    q = make_query(oracle, prompt)
    # a budget too small for any edit: recorded as no candidate, no crash, no success
    tiny = Budget(1, 0.01)
    for search in (greedy_attack, random_attack):
        res = search(prompt, "typo", q, queries=5, budget=tiny)
        assert not res.success and res.outcome is None and res.adversarial == prompt
        assert res.note == "no candidate within the budget"
    only_stop = "of the, a"
    for search in (greedy_attack, random_attack):
        res = search(only_stop, "glyph", q, queries=5)
        assert res.note == "no perturbable word" and res.queries == 0
    with pytest.raises(ValueError, match="empty"):
        greedy_attack("  ", "typo", q)
    with pytest.raises(ValueError, match="unknown rule"):
        random_attack(prompt, "leet", q)
    with pytest.raises(ValueError, match="queries"):
        greedy_attack(prompt, "typo", q, queries=0)
    with pytest.raises(ValueError, match="max_words"):
        Budget(0, 0.1)


def test_two_words_of_budget_are_kept_against_the_original(oracle: LoadedModel) -> None:
    prompt = "a red boot and a blue coat"
    res = greedy_attack(prompt, "typo", make_query(oracle, prompt), queries=30, k=2,
                        budget=Budget(2, 0.12), seed=1, alpha=1e-9)  # never "succeeds": runs on
    assert len(res.words_changed) <= 2
    assert res.edit_distance / len(prompt) <= 0.12
    for s in res.steps:
        if s.phase == "candidate":
            assert Budget(2, 0.12).allows(prompt, s.prompt, 2)


def test_a_full_word_budget_swaps_in_the_next_word_instead_of_stopping() -> None:
    """Importance says "worn" matters most, but only changing "boot" succeeds: with a one-word
    budget, greedy spends its remaining queries on "boot" (applied to the original prompt, so
    "worn" is back) instead of stopping after "worn"'s candidates."""
    prompt = "a worn leather boot in winter"
    words = [w.text for w in split_words(prompt)]

    def query(text: str) -> Outcome:
        got = [w.text for w in split_words(text)]
        if len(got) < len(words):  # an ablation: "worn" most important, "boot" second
            gone = next((w for w in words if w not in got), "")
            obj = {"worn": 0.9, "boot": 0.5}.get(gone, 0.1)
            return Outcome(obj, 1.0)
        if got[3] != "boot":
            return Outcome(0.8, 0.001)
        return Outcome(0.3 if got[1] != "worn" else 0.0, 0.9)

    res = greedy_attack(prompt, "typo", query, queries=12, k=2, budget=Budget(1, 0.2), seed=0)
    assert res.success and res.words_changed == (3,)
    adv = [w.text for w in split_words(res.adversarial)]
    assert adv[1] == "worn" and adv[3] != "boot"
    assert [s.word_index for s in res.steps if s.accepted] == [3]
    assert all(Budget(1, 0.2).allows(prompt, s.prompt, 1) for s in res.steps if s.phase == "candidate")
    # with the old stop-at-full-budget rule, only "worn" would have been tried
    assert {s.word_index for s in res.steps if s.phase == "candidate"} == {1, 3}


def test_greedy_text_ranks_by_the_text_distance_at_no_query_cost(oracle: LoadedModel) -> None:
    prompt = "a worn leather boot in winter"
    asked: list[tuple[str, str]] = []

    def distance(a: str, b: str) -> float:  # a text encoder that only knows the keyword
        asked.append((a, b))
        return float("boot" in a.split()) - float("boot" in b.split())

    log: list[str] = []
    res = greedy_text_attack(prompt, "typo", make_query(oracle, prompt, log), queries=10, k=3,
                             budget=Budget(1, 0.2), seed=0, distance=distance)
    assert res.search == "greedy-text" and res.success and res.words_changed == (3,)
    assert res.queries == len(log) == 1  # no importance queries: the first candidate succeeds
    assert [s.phase for s in res.steps] == ["candidate"]
    assert sorted(b for _, b in asked) == sorted(ablate(prompt, i) for i in (1, 2, 3, 5))
    # image importance spends a query per content word first
    assert greedy_attack(prompt, "typo", make_query(oracle, prompt), queries=10, k=3,
                         budget=Budget(1, 0.2), seed=0).queries == 5
    with pytest.raises(ValueError, match="text distance"):
        greedy_text_attack(prompt, "typo", make_query(oracle, prompt))


def test_a_success_is_kept_over_a_higher_objective_without_one() -> None:
    """The objective and the test's p-value need not agree: a candidate that passes the test
    ends the search as a success even when an earlier candidate scored a higher objective."""
    prompt = "a worn boot"
    seen: list[str] = []

    def query(text: str) -> Outcome:
        seen.append(text)
        if len(text.split()) < 3:  # ablations
            return Outcome(1.0 if "boot" not in text else 0.5, 1.0)
        if "boot" in text.split():
            return Outcome(0.9, 0.2)  # a changed "worn": high objective, not significant
        return Outcome(0.3, 0.001)  # a changed "boot": lower objective, significant

    res = greedy_attack(prompt, "typo", query, queries=10, k=2, budget=Budget(1, 0.3), alpha=0.01)
    # "boot" ranks first: its candidates succeed at once
    assert res.success and res.words_changed == (2,)

    def rigged(text: str) -> Outcome:
        if len(text.split()) < 3:  # now "worn" ranks first
            return Outcome(1.0 if "worn" not in text else 0.5, 1.0)
        return query(text)
    res = greedy_attack(prompt, "typo", rigged, queries=10, k=2, budget=Budget(1, 0.3), alpha=0.01)
    assert res.success and res.words_changed == (2,) and res.outcome.p_value == 0.001
