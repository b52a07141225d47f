"""Attack search over prompt perturbations (Gao et al. 2023, arXiv 2306.13103, section 4).

A *query* generates one set of images for a prompt (from the same initial noises as the
original prompt's set) and measures it against the original: ``query(prompt) -> Outcome``
(the searched objective, larger = stronger attack, and the success test's p-value). Searches
only see that function, so they run unchanged on a text-to-image model, on a keyword oracle,
or replayed from a checkpointed log.

* ``word_importance``: each perturbable word's objective when it is deleted from the prompt
  (one query per word), highest first.
* ``greedy_attack``: the paper's greedy search: words in importance order; for each, up to
  ``k`` candidates of the rule, each queried; the best candidate (a success first, then the
  highest objective) is kept when it beats the current prompt; once ``budget.max_words``
  words are changed, the next word's best candidate replaces the last change when it beats it
  (so a one-word budget keeps trying words in importance order); stop at the first success
  (p-value < alpha), when the words run out, or when ``queries`` are spent. The importance
  queries are charged to the same budget, so greedy and random spend exactly the same number
  of generated sets.
* ``greedy_text_attack`` (``greedy-text``): the same greedy search with the importance taken
  from the text encoder instead of generated images: each word's ``distance`` (e.g. CLIP text
  embedding cosine distance) between the prompt and the prompt without it. No generated set is
  spent on the ranking, so the whole budget goes to candidates.
* ``random_attack``: the "human random attack" baseline: up to ``queries`` random perturbations
  within the same budget (``perturb.random_perturbation``), stopping at the first success.

Every candidate keeps to the budget relative to the *original* prompt (words changed and edit
fraction), and every step is recorded, so an attack can be replayed query by query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import jellyfish

from bench.attacks.perturb import (Budget, perturbable_words, random_perturbation, replace_word,
                                   split_words, word_candidates)

__all__ = ["Outcome", "Step", "AttackResult", "word_importance", "greedy_attack",
           "greedy_text_attack", "random_attack",
           "ablate", "SEARCHES"]


@dataclass(frozen=True)
class Outcome:
    """What one query measured: the searched objective, the success test's p-value, and every
    objective and p-value measured (for the rows)."""

    objective: float
    p_value: float
    values: dict[str, float] = field(default_factory=dict)


QueryFn = Callable[[str], Outcome]


@dataclass(frozen=True)
class Step:
    """One query of a search: ``phase`` importance | candidate | random."""

    query: int
    phase: str
    prompt: str
    word_index: int
    outcome: Outcome
    accepted: bool


@dataclass(frozen=True)
class AttackResult:
    """One attack on one prompt. ``outcome`` is None when no candidate was ever queried (the
    recorded "no candidate" outcome)."""

    original: str
    adversarial: str
    rule: str
    search: str
    words_changed: tuple[int, ...]
    edit_distance: int
    outcome: Outcome | None
    success: bool
    steps: tuple[Step, ...]
    note: str = ""

    @property
    def queries(self) -> int:
        return len(self.steps)


def ablate(prompt: str, index: int) -> str:
    """``prompt`` without word ``index`` (runs of spaces left by the deletion collapsed)."""
    word = split_words(prompt)[index]
    out = replace_word(prompt, word, "")
    return re.sub(r" {2,}", " ", out).strip()


def word_importance(prompt: str, query: QueryFn, include_stop_words: bool = False,
                    max_queries: int | None = None) -> list[tuple[int, Outcome]]:
    """(word index, outcome of the prompt without that word), highest objective first (ties:
    earlier word first); at most ``max_queries`` words are measured, in prompt order."""
    return _rank(prompt, lambda i: query(ablate(prompt, i)), include_stop_words, max_queries)


def _rank(prompt: str, measure: Callable[[int], Outcome], include_stop_words: bool,
          max_queries: int | None) -> list[tuple[int, Outcome]]:
    words = perturbable_words(prompt, include_stop_words)
    if max_queries is not None:
        words = words[:max(0, max_queries)]
    scored = [(w.index, measure(w.index)) for w in words]
    return sorted(scored, key=lambda t: (-t[1].objective, t[0]))


def _result(prompt: str, adversarial: str, rule: str, search: str, changed: list[int],
            best: Outcome | None, alpha: float, steps: list[Step], note: str = "") -> AttackResult:
    return AttackResult(prompt, adversarial, rule, search, tuple(sorted(changed)),
                        jellyfish.levenshtein_distance(prompt, adversarial), best,
                        best is not None and best.p_value < alpha, tuple(steps), note)


def greedy_attack(prompt: str, rule: str, query: QueryFn, *, budget: Budget = Budget(),
                  queries: int = 20, k: int = 5, alpha: float = 0.05, seed: int = 0,
                  include_stop_words: bool = False, distance: object = None) -> AttackResult:
    """The greedy word-level search with importance from generated images (module doc;
    ``distance`` is accepted for a uniform call and not used)."""
    return _greedy(prompt, rule, query, budget, queries, k, alpha, seed, include_stop_words,
                   None, "greedy")


def greedy_text_attack(prompt: str, rule: str, query: QueryFn, *, budget: Budget = Budget(),
                       queries: int = 20, k: int = 5, alpha: float = 0.05, seed: int = 0,
                       include_stop_words: bool = False,
                       distance: Callable[[str, str], float] | None = None) -> AttackResult:
    """``greedy-text`` (module doc): words ranked by ``distance(prompt, prompt without the
    word)``, at no query cost."""
    if distance is None:
        raise ValueError("search 'greedy-text' needs a text distance (a CLIP text encoder); "
                         "use search 'greedy' without one")
    return _greedy(prompt, rule, query, budget, queries, k, alpha, seed, include_stop_words,
                   distance, "greedy-text")


def _greedy(prompt: str, rule: str, query: QueryFn, budget: Budget, queries: int, k: int,
            alpha: float, seed: int, include_stop_words: bool,
            distance: Callable[[str, str], float] | None, search: str) -> AttackResult:
    _check(queries, k, alpha)
    steps: list[Step] = []

    def ask(phase: str, text: str, index: int) -> Outcome:
        out = query(text)
        steps.append(Step(len(steps), phase, text, index, out, False))
        return out

    if distance is None:
        ranked = _rank(prompt, lambda i: ask("importance", ablate(prompt, i), i),
                       include_stop_words, max_queries=queries)
    else:
        ranked = _rank(prompt, lambda i: Outcome(float(distance(prompt, ablate(prompt, i))), 1.0),
                       include_stop_words, max_queries=None)
    def better(a: Outcome, b: Outcome) -> bool:
        """A success beats a failure; then the higher objective wins."""
        return (a.p_value < alpha, a.objective) > (b.p_value < alpha, b.objective)

    # history[j] = (prompt, changed words) after j accepted changes; history[-1] is current
    history: list[tuple[str, list[int]]] = [(prompt, [])]
    best: Outcome | None = None
    for index, _ in ranked:
        if len(steps) >= queries or (best is not None and best.p_value < alpha):
            break
        # a full word budget swaps the last accepted change for this word's best candidate
        base, changed = history[-1] if len(history) <= budget.max_words else history[-2]
        cands = [c for c in word_candidates(base, index, rule, seed, 4 * k, Budget(1, 1.0),
                                            include_stop_words)
                 if budget.allows(prompt, c, len(changed) + 1)][:k]
        word_best: tuple[str, Outcome, int] | None = None
        for cand in cands:
            if len(steps) >= queries:
                break
            out = ask("candidate", cand, index)
            if word_best is None or better(out, word_best[1]):
                word_best = (cand, out, len(steps) - 1)
            if out.p_value < alpha:
                break
        if word_best is not None and (best is None or better(word_best[1], best)):
            best = word_best[1]
            if len(history) > budget.max_words:
                history.pop()
                for s in steps:  # the swapped-out change is no longer part of the attack
                    if s.accepted and s.word_index not in changed:
                        steps[s.query] = Step(s.query, s.phase, s.prompt, s.word_index, s.outcome, False)
            history.append((word_best[0], changed + [index]))
            j = word_best[2]
            steps[j] = Step(j, "candidate", steps[j].prompt, index, steps[j].outcome, True)
    current, changed = history[-1]
    note = "" if best is not None else ("no perturbable word" if not ranked else
                                         "no candidate within the budget")
    return _result(prompt, current, rule, search, changed, best, alpha, steps, note)


def random_attack(prompt: str, rule: str, query: QueryFn, *, budget: Budget = Budget(),
                  queries: int = 20, alpha: float = 0.05, seed: int = 0,
                  include_stop_words: bool = False, **_: object) -> AttackResult:
    """The random baseline (module doc): distinct random perturbations, ``queries`` at most;
    the adversarial prompt is the first success, or else the highest objective."""
    _check(queries, 1, alpha)
    steps: list[Step] = []
    seen: set[str] = set()
    best: tuple[Outcome, str, tuple[int, ...]] | None = None
    for draw in range(20 * queries):
        if len(steps) >= queries or (best is not None and best[0].p_value < alpha):
            break
        pert = random_perturbation(prompt, rule, budget, seed=seed * 1_000_003 + draw,
                                   include_stop_words=include_stop_words)
        if pert is None:
            break
        if pert.perturbed in seen:
            continue
        seen.add(pert.perturbed)
        out = query(pert.perturbed)
        word = pert.words_changed[0] if pert.words_changed else -1
        steps.append(Step(len(steps), "random", pert.perturbed, word, out, False))
        if best is None or out.objective > best[0].objective or out.p_value < alpha <= best[0].p_value:
            best = (out, pert.perturbed, pert.words_changed)
    if best is None:
        return _result(prompt, prompt, rule, "random", [], None, alpha, steps,
                       "no perturbable word" if not perturbable_words(prompt, include_stop_words)
                       else "no candidate within the budget")
    j = next(s.query for s in steps if s.prompt == best[1])
    steps[j] = Step(j, "random", steps[j].prompt, steps[j].word_index, steps[j].outcome, True)
    return _result(prompt, best[1], rule, "random", list(best[2]), best[0], alpha, steps)


def _check(queries: int, k: int, alpha: float) -> None:
    for name, v in (("queries", queries), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}; e.g. {name}=10")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}; e.g. alpha=0.05")


SEARCHES: dict[str, Callable[..., AttackResult]] = {
    "greedy": greedy_attack, "greedy-text": greedy_text_attack, "random": random_attack}
