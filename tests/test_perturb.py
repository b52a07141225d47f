"""Prompt-perturbation rules of the prompt-robustness attacks (Gao et al. 2023, arXiv 2306.13103)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import unicodedata

import jellyfish
import numpy as np
import pronouncing
import pytest
from confusable_homoglyphs import confusables

from bench.attacks.perturb import (
    QWERTY_NEIGHBOURS,
    RULES,
    STOP_WORDS,
    Budget,
    Perturbation,
    edit_fraction,
    glyph_candidates,
    homoglyphs,
    perturbable_words,
    phonetic_candidates,
    random_perturbation,
    replace_word,
    split_words,
    typo_candidates,
    word_candidates,
)

RULE_NAMES = ["typo", "glyph", "phonetic"]
REAL_WORDS = ["coat", "boot", "photo", "sneaker", "trainer", "beach", "dog", "red", "Coat",
              "BOOT", "elefant", "don't", "the", "of", "a", "on", "with"]
UNICODE_WORDS = ["café", "straße", "日本", "naïve", "é", "ß", "Ωmega", "don’t"]
SEPARATORS = [" ", " ", " ", "  ", ", ", " - ", "! ", "\t", "... ", " (", ") ", "/"]


def random_prompts(n: int = 300, seed: int = 20230623) -> list[str]:
    """Prompts of random ASCII words (random case), real words, Unicode words, digits and
    punctuation with random spacing."""
    rng = np.random.default_rng(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    prompts = []
    for _ in range(n):
        parts = []
        for _ in range(int(rng.integers(1, 8))):
            kind = rng.random()
            if kind < 0.45:
                w = "".join(rng.choice(list(letters), size=int(rng.integers(1, 11))))
                case = int(rng.integers(4))
                w = [w, w.capitalize(), w.upper(), w.swapcase() if len(w) < 3 else w[:2] + w[2:].upper()][case]
            elif kind < 0.75:
                w = str(rng.choice(REAL_WORDS))
            elif kind < 0.88:
                w = str(rng.choice(UNICODE_WORDS))
            else:
                w = str(rng.choice(["42", "4k", "1024", "3d", "x2"]))
            parts.append(w)
            parts.append(str(rng.choice(SEPARATORS)))
        text = "".join(parts[:-1])
        if rng.random() < 0.3:
            text = str(rng.choice(['"', "  ", "(", "-"])) + text + str(rng.choice(['"', ".", "!", " ", "?!"]))
        prompts.append(text)
    return prompts


PROMPTS = random_prompts()


def stressless(phones: str) -> list[str]:
    return re.sub(r"\d", "", phones.split("#")[0]).split()


def seq_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance between two phone sequences (independent of the module's index)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@functools.lru_cache(maxsize=None)
def cmu_words_by_metaphone(code: str) -> frozenset[str]:
    pronouncing.init_cmu()
    return frozenset(w for w, _ in pronouncing.pronunciations
                     if re.fullmatch(r"[a-z]+", w) and jellyfish.metaphone(w) == code)


def changed_middle(prompt: str, word, perturbed: str) -> str:
    """The text standing in ``perturbed`` where ``word`` stood, asserting the rest is identical."""
    prefix, suffix = prompt[: word.start], prompt[word.end :]
    assert perturbed.startswith(prefix)
    assert perturbed.endswith(suffix)
    assert len(perturbed) >= len(prefix) + len(suffix)
    return perturbed[len(prefix) : len(perturbed) - len(suffix)]


def check_rule_candidate(rule: str, word: str, cand: str) -> None:
    assert cand != word
    if rule == "typo":
        assert jellyfish.damerau_levenshtein_distance(word, cand) == 1
    elif rule == "glyph":
        assert len(cand) == len(word)
        diff = [i for i in range(len(word)) if word[i] != cand[i]]
        assert len(diff) == 1
        assert not cand[diff[0]].isascii()
    else:
        assert re.fullmatch(r"[A-Za-z]+", cand), cand


# --------------------------------------------------------------------------------------------
# Words and stop words
# --------------------------------------------------------------------------------------------


def test_split_words_spans_and_rebuild():
    prompt = "  A photo, of the 'coat' — don't café_日本 42!"
    words = split_words(prompt)
    assert [w.text for w in words] == ["A", "photo", "of", "the", "coat", "don't", "café", "日本", "42"]
    assert [w.index for w in words] == list(range(len(words)))
    for w in words:
        assert prompt[w.start : w.end] == w.text
        assert replace_word(prompt, w, w.text) == prompt
    # everything outside the words is kept untouched
    assert replace_word(prompt, words[4], "X") == "  A photo, of the 'X' — don't café_日本 42!"
    # a decomposed accent stays inside its word
    assert [w.text for w in split_words("cafe\u0301 au lait")] == ["cafe\u0301", "au", "lait"]
    with pytest.raises(ValueError, match="not a word of this prompt"):
        replace_word("another prompt", words[4], "X")


def test_stop_words_are_the_nltk_list():
    assert 100 <= len(STOP_WORDS) <= 180
    assert all(w == w.lower() for w in STOP_WORDS)
    assert {"a", "an", "the", "of", "in", "on", "with", "and", "is", "she", "they"} <= STOP_WORDS
    assert not {"photo", "coat", "dog", "red"} & STOP_WORDS


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_stop_words_are_not_perturbed(rule):
    prompt = "a photo of the coat"
    assert [w.text for w in perturbable_words(prompt)] == ["photo", "coat"]
    budget = Budget(max_words=3, max_edit_fraction=1.0)
    for i, w in enumerate(split_words(prompt)):
        cands = word_candidates(prompt, i, rule, seed=0, k=5, budget=budget)
        assert bool(cands) == (w.text in {"photo", "coat"}), (w, cands)
    for seed in range(20):
        p = random_perturbation(prompt, rule, budget, seed=seed)
        assert p is not None and set(p.words_changed) <= {1, 4}
    assert "the" in [w.text for w in perturbable_words(prompt, include_stop_words=True)]
    assert word_candidates(prompt, 3, "typo", seed=0, k=3, budget=budget, include_stop_words=True)


def test_numbers_are_not_perturbable():
    assert [w.text for w in perturbable_words("3 dogs in 1024 px, 4k")] == ["dogs", "px", "4k"]


# --------------------------------------------------------------------------------------------
# Properties over random prompts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_word_candidates_properties(rule):
    rng = np.random.default_rng(7)
    n_nonempty = 0
    for prompt in PROMPTS:
        words = split_words(prompt)
        perturbable = {w.index for w in perturbable_words(prompt)}
        for w in words:
            budget = Budget(max_words=1, max_edit_fraction=float(rng.choice([0.05, 0.1, 0.3, 1.0])))
            k = int(rng.integers(1, 7))
            seed = int(rng.integers(1000))
            cands = word_candidates(prompt, w.index, rule, seed=seed, k=k, budget=budget)
            assert cands == word_candidates(prompt, w.index, rule, seed=seed, k=k, budget=budget)
            assert len(cands) <= k and len(set(cands)) == len(cands)
            if w.index not in perturbable:
                assert cands == []
            n_nonempty += bool(cands)
            for c in cands:
                assert c != prompt
                middle = changed_middle(prompt, w, c)
                check_rule_candidate(rule, w.text, middle)
                assert budget.allows(prompt, c, 1)
                assert jellyfish.levenshtein_distance(prompt, c) / len(prompt) <= budget.max_edit_fraction
    assert n_nonempty > 100  # the property is not vacuous


def test_typo_seeds_differ():
    differ = total = 0
    for prompt in PROMPTS[:150]:
        for w in perturbable_words(prompt):
            if len(w.text) < 3:
                continue
            a = word_candidates(prompt, w.index, "typo", seed=0, k=3, budget=Budget(1, 1.0))
            b = word_candidates(prompt, w.index, "typo", seed=1, k=3, budget=Budget(1, 1.0))
            total += 1
            differ += a != b
    assert total > 50 and differ / total > 0.9


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_random_perturbation_properties(rule):
    rng = np.random.default_rng(11)
    n_found = 0
    for prompt in PROMPTS:
        budget = Budget(max_words=int(rng.integers(1, 4)),
                        max_edit_fraction=float(rng.choice([0.05, 0.1, 0.3, 1.0])))
        seed = int(rng.integers(1000))
        p = random_perturbation(prompt, rule, budget, seed=seed)
        assert p == random_perturbation(prompt, rule, budget, seed=seed)
        if p is None:
            continue
        n_found += 1
        assert isinstance(p, Perturbation) and p.original == prompt and p.rule == rule
        assert p.perturbed != prompt
        assert 1 <= len(p.words_changed) <= budget.max_words
        assert list(p.words_changed) == sorted(set(p.words_changed))
        assert set(p.words_changed) <= {w.index for w in perturbable_words(prompt)}
        assert p.edit_distance == jellyfish.levenshtein_distance(prompt, p.perturbed)
        assert p.edit_distance / len(prompt) <= budget.max_edit_fraction
        assert budget.allows(prompt, p.perturbed, len(p.words_changed))
        # only the changed words changed: the text between them is kept exactly
        words = split_words(prompt)
        pattern, pos = "", 0
        for i in p.words_changed:
            pattern += re.escape(prompt[pos : words[i].start]) + "(.+?)"
            pos = words[i].end
        pattern += re.escape(prompt[pos:])
        m = re.fullmatch(pattern, p.perturbed, flags=re.S)
        assert m is not None, (prompt, p)
        for i, middle in zip(p.words_changed, m.groups()):
            check_rule_candidate(rule, words[i].text, middle)
    assert n_found > 50


def test_random_perturbation_uses_the_word_budget():
    prompt = "a red coat and blue trainers on a sandy beach near the old harbour"
    counts = {len(random_perturbation(prompt, "typo", Budget(3, 0.5), seed=s).words_changed) for s in range(10)}
    assert counts == {3}
    assert {len(random_perturbation(prompt, "typo", Budget(1, 0.5), seed=s).words_changed) for s in range(10)} == {1}


def test_seeding_does_not_depend_on_python_hash():
    prompt = "a photo of the red coat"
    here = [word_candidates(prompt, 4, r, seed=3, k=4, budget=Budget(1, 1.0)) for r in ("typo", "glyph")]
    code = (
        "import json; from bench.attacks.perturb import word_candidates, Budget;"
        f"print(json.dumps([word_candidates({prompt!r}, 4, r, seed=3, k=4, budget=Budget(1, 1.0))"
        " for r in ('typo', 'glyph')]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here


# --------------------------------------------------------------------------------------------
# typo
# --------------------------------------------------------------------------------------------


def test_qwerty_table():
    assert set(QWERTY_NEIGHBOURS) == set("abcdefghijklmnopqrstuvwxyz0123456789")
    for key, nbs in QWERTY_NEIGHBOURS.items():
        assert key not in nbs and len(set(nbs)) == len(nbs)
        for nb in nbs:
            assert key in QWERTY_NEIGHBOURS[nb], (key, nb)  # adjacency is symmetric
    assert set(QWERTY_NEIGHBOURS["g"]) == set("tyfhvb")
    assert set(QWERTY_NEIGHBOURS["a"]) == set("qwsz")
    assert set(QWERTY_NEIGHBOURS["s"]) == set("weadzx")
    assert set(QWERTY_NEIGHBOURS["m"]) == set("jkn")
    assert set(QWERTY_NEIGHBOURS["5"]) == set("46rt")


def typo_operation(word: str, cand: str) -> str:
    """Which single typo turns ``word`` into ``cand``, asserting the typed characters are QWERTY
    neighbours (in the original key's case) or repeats."""

    def neighbour(new: str, ref: str) -> bool:
        ok = new.lower() in QWERTY_NEIGHBOURS.get(ref.lower(), "") if ref.isascii() else False
        if ok and ref.isalpha() and new.isalpha():
            ok = new.isupper() == ref.isupper()
        return ok

    if len(cand) == len(word) - 1:
        assert any(word[:i] + word[i + 1 :] == cand for i in range(len(word)))
        return "delete"
    if len(cand) == len(word) + 1:
        for i in range(len(cand)):
            if cand[:i] + cand[i + 1 :] == word:
                adjacent = word[max(i - 1, 0) : i + 1]
                if cand[i] in adjacent:
                    return "repeat"
                if any(neighbour(cand[i], ref) for ref in adjacent):
                    return "insert"
        raise AssertionError(f"{cand!r} is no insert/repeat typo of {word!r}")
    assert len(cand) == len(word)
    diff = [i for i in range(len(word)) if word[i] != cand[i]]
    if len(diff) == 1:
        assert neighbour(cand[diff[0]], word[diff[0]]), (word, cand)
        return "replace"
    i, j = diff
    assert j == i + 1 and cand[i] == word[j] and cand[j] == word[i]
    return "swap"


@pytest.mark.parametrize("word", ["Coat", "coat", "HELLO", "a", "Q", "日本", "straße", "don't", "42", "Zz9"])
def test_typo_candidates(word):
    cands = typo_candidates(word, np.random.default_rng(0), 1000)
    assert cands and len(set(cands)) == len(cands) and word not in cands
    assert cands == typo_candidates(word, np.random.default_rng(0), 1000)
    ops = set()
    for c in cands:
        assert jellyfish.damerau_levenshtein_distance(word, c) == 1, (word, c)
        ops.add(typo_operation(word, c))
    if len(word) == 1:
        assert "" not in cands and ops <= {"insert", "replace", "repeat"}
    if word in ("Coat", "HELLO"):
        assert ops == {"delete", "insert", "replace", "swap", "repeat"}
    if word == "Coat":
        assert all(c[0].isupper() or c in {"oat", "oCat"} for c in cands), cands
    if word == "HELLO":
        assert all(c.isupper() for c in cands)
    # a few candidates spread over the operations
    few = typo_candidates(word, np.random.default_rng(1), 4)
    assert len(few) == min(4, len(cands))
    if word == "Coat":
        assert len({typo_operation(word, c) for c in few}) == 4


# --------------------------------------------------------------------------------------------
# glyph
# --------------------------------------------------------------------------------------------


def test_homoglyphs_come_from_the_package():
    package = {h["c"] for h in confusables.confusables_data["a"]}
    assert set(homoglyphs("a")) <= package
    assert "\u0430" in homoglyphs("a")  # Cyrillic а
    assert "\u043e" in homoglyphs("o")  # Cyrillic о
    assert homoglyphs("m") == ()  # its only confusable is the two characters "rn"
    for ch in "aolIO0e1":
        for g in homoglyphs(ch):
            assert len(g) == 1 and not g.isascii() and g.isprintable()
            assert not unicodedata.category(g).startswith("M")


@pytest.mark.parametrize("word", ["coat", "Photo", "sneaker", "o", "Zebra9", "café"])
def test_glyph_candidates(word):
    cands = glyph_candidates(word, np.random.default_rng(0), 1000)
    assert cands and len(set(cands)) == len(cands)
    for c in cands:
        assert len(c) == len(word)
        diff = [i for i in range(len(word)) if c[i] != word[i]]
        assert len(diff) == 1
        old, new = word[diff[0]], c[diff[0]]
        assert not new.isascii() and new.isprintable()
        # checked from the new character's side: the package says it is confusable with `old`
        found = confusables.is_confusable(new, greedy=True, preferred_aliases=[])
        assert found and old in {h["c"] for h in found[0]["homoglyphs"]}, (old, new)
        assert len(split_words(c)) == 1  # the word stays one word
    if word == "o":
        assert "\u043e" in cands
    few = glyph_candidates(word, np.random.default_rng(3), 3)
    positions = {next(i for i in range(len(word)) if c[i] != word[i]) for c in few}
    assert len(positions) == min(3, sum(bool(homoglyphs(ch)) for ch in word))


def test_glyph_without_confusables():
    assert glyph_candidates("mm", np.random.default_rng(0), 5) == []
    assert word_candidates("mm mm", 0, "glyph", seed=0, k=3, budget=Budget(1, 1.0)) == []
    assert random_perturbation("mm mm", "glyph", Budget(1, 1.0), seed=0) is None


# --------------------------------------------------------------------------------------------
# phonetic
# --------------------------------------------------------------------------------------------


def test_phonetic_homophone_of_coat():
    coat = {tuple(stressless(p)) for p in pronouncing.phones_for_word("coat")}
    cands = phonetic_candidates("coat", np.random.default_rng(0), 50)
    assert "cote" in cands
    same = [c for c in cands if {tuple(stressless(p)) for p in pronouncing.phones_for_word(c)} & coat]
    assert same and cands[: len(same)] == same  # homophones come first


@pytest.mark.parametrize("word", ["coat", "boot", "sneaker", "trainer", "beach", "photo", "red"])
def test_phonetic_candidates_are_near_homophones(word):
    mine = [stressless(p) for p in pronouncing.phones_for_word(word)]
    cands = phonetic_candidates(word, np.random.default_rng(0), 30)
    assert cands and len(set(cands)) == len(cands) and word not in cands
    dists = []
    for c in cands:
        theirs = [stressless(p) for p in pronouncing.phones_for_word(c)]
        assert theirs, c  # a CMU word
        dists.append(min(seq_distance(a, b) for a in mine for b in theirs))
    assert max(dists) <= 1 and dists == sorted(dists)
    assert cands == phonetic_candidates(word, np.random.default_rng(0), 30)


def test_phonetic_case_pattern():
    for word, check in [("Coat", lambda c: c[0].isupper() and c[1:].islower()),
                        ("COAT", str.isupper), ("coat", str.islower)]:
        cands = phonetic_candidates(word, np.random.default_rng(0), 10)
        assert cands and all(check(c) for c in cands), cands


@pytest.mark.parametrize("word", ["elefant", "jiraffe", "fashionista"])
def test_phonetic_metaphone_fallback(word):
    assert pronouncing.phones_for_word(word) == []  # absent from CMU
    code = jellyfish.metaphone(word)
    cands = phonetic_candidates(word, np.random.default_rng(0), 1000)
    assert set(cands) == cmu_words_by_metaphone(code) - {word}
    assert all(jellyfish.metaphone(c) == code for c in cands)
    if word == "elefant":
        assert "elephant" in cands
    if word == "fashionista":
        assert cands == []  # no dictionary word shares its code: a "no candidate" outcome


@pytest.mark.parametrize("word", ["日本", "42", "new york", "café", "4k", ""])
def test_phonetic_needs_one_ascii_word(word):
    assert phonetic_candidates(word, np.random.default_rng(0), 5) == []


def test_rules_limit_k_and_are_deterministic():
    for name, rule in RULES.items():
        assert rule.name == name and rule.description
        for k in (1, 2, 5):
            out = rule("sneaker", np.random.default_rng(4), k)
            assert 1 <= len(out) <= k and out == rule("sneaker", np.random.default_rng(4), k)
        assert rule("sneaker", np.random.default_rng(4), 0) == []


# --------------------------------------------------------------------------------------------
# Budget and bad input
# --------------------------------------------------------------------------------------------


def test_budget():
    assert edit_fraction("abcd", "abce") == 0.25
    b = Budget(max_words=2, max_edit_fraction=0.25)
    assert b.allows("abcd", "abce", 1) and b.allows("abcd", "abce", 2)
    assert not b.allows("abcd", "abce", 3)
    assert not b.allows("abcd", "abef", 1)
    assert Budget() == Budget(1, 0.1)
    with pytest.raises(ValueError, match="empty"):
        edit_fraction("", "x")


@pytest.mark.parametrize("kwargs, field", [
    ({"max_words": 0}, "max_words"), ({"max_words": -2}, "max_words"), ({"max_words": 1.5}, "max_words"),
    ({"max_edit_fraction": 0}, "max_edit_fraction"), ({"max_edit_fraction": 1.5}, "max_edit_fraction"),
    ({"max_edit_fraction": -0.1}, "max_edit_fraction"), ({"max_edit_fraction": float("nan")}, "max_edit_fraction"),
])
def test_budget_validation(kwargs, field):
    with pytest.raises(ValueError, match=field) as err:
        Budget(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(err.value)


@pytest.mark.parametrize("prompt", ["", "   ", "\t\n"])
def test_empty_prompt(prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        word_candidates(prompt, 0, "typo")
    with pytest.raises(ValueError, match="prompt is empty"):
        perturbable_words(prompt)
    with pytest.raises(ValueError, match="prompt is empty"):
        random_perturbation(prompt, "typo")


def test_unknown_rule():
    for call in (lambda: word_candidates("a red coat", 2, "leet"),
                 lambda: random_perturbation("a red coat", "leet")):
        with pytest.raises(ValueError, match="leet") as err:
            call()
        assert all(name in str(err.value) for name in RULE_NAMES)


def test_word_index_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        word_candidates("a red coat", 3, "typo")


@pytest.mark.parametrize("prompt", ["of the, a", "... !!", "a 42, of 7"])
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_no_perturbable_word(prompt, rule):
    assert perturbable_words(prompt) == []
    for w in split_words(prompt):
        assert word_candidates(prompt, w.index, rule, seed=0, k=5, budget=Budget(3, 1.0)) == []
    assert random_perturbation(prompt, rule, Budget(3, 1.0), seed=0) is None
