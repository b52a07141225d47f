"""Word-level prompt perturbations for the prompt-robustness attacks of Gao et al. 2023.

"Evaluating the Robustness of Text-to-image Diffusion Models against Real-world Attacks"
(arXiv 2306.13103) attacks a prompt by changing a few of its words the way people do by
accident or on purpose: typos (keyboard slips), glyph swaps (a letter replaced by a Unicode
confusable that looks the same) and phonetic swaps (a word replaced by a homophone or a
near-homophone). The attack is bounded by a budget on the number of words changed and on the
character edit distance; the baseline is the "human random attack", which changes random
words with random candidates.

This module holds the perturbation rules and the budget, nothing model-specific:

* ``split_words`` / ``replace_word``: a prompt as maximal runs of word characters; everything
  between words (punctuation, whitespace) is never touched.
* ``RULES``: ``typo``, ``glyph`` and ``phonetic``, each ``(word, rng, k) -> list[str]``
  returning up to ``k`` distinct candidates different from ``word``, deterministic for a given
  generator state.
* ``Budget``: at most ``max_words`` words changed and ``edit_fraction <= max_edit_fraction``.
* ``word_candidates``, ``perturbable_words``, ``random_perturbation``: the prompt-level API,
  seeded from a stable hash of (seed, prompt, word, rule), never from Python's ``hash``.

Data: Unicode confusables (confusables.txt) come from ``confusable_homoglyphs``; pronunciations
come from the CMU Pronouncing Dictionary via ``pronouncing``; Metaphone and edit distances
from ``jellyfish``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import jellyfish
import numpy as np
import pronouncing
from confusable_homoglyphs import confusables

__all__ = [
    "Budget",
    "Perturbation",
    "Rule",
    "RULES",
    "STOP_WORDS",
    "QWERTY_NEIGHBOURS",
    "Word",
    "edit_fraction",
    "glyph_candidates",
    "homoglyphs",
    "perturbable_words",
    "phonetic_candidates",
    "random_perturbation",
    "replace_word",
    "split_words",
    "typo_candidates",
    "word_candidates",
]

# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------

#: Apostrophes that join two runs of word characters into one word ("don't", "don’t").
APOSTROPHES = frozenset("'\u2019")


@dataclass(frozen=True)
class Word:
    """One word of a prompt: its position among the words and its span ``[start, end)``."""

    index: int
    start: int
    end: int
    text: str


def _is_word_char(ch: str) -> bool:
    # letters and digits of any script, plus combining marks so that a decomposed "é"
    # (e + U+0301) stays one word; the underscore is not a word character here
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def split_words(prompt: str) -> list[Word]:
    """The maximal runs of word characters of ``prompt`` (letters of any script, digits,
    combining marks, and apostrophes between two of them), in order."""
    words: list[Word] = []
    n = len(prompt)
    i = 0
    while i < n:
        if not _is_word_char(prompt[i]):
            i += 1
            continue
        j = i + 1
        while j < n:
            if _is_word_char(prompt[j]):
                j += 1
            elif prompt[j] in APOSTROPHES and j + 1 < n and _is_word_char(prompt[j + 1]):
                j += 2
            else:
                break
        words.append(Word(len(words), i, j, prompt[i:j]))
        i = j
    return words


def replace_word(prompt: str, word: Word, new_text: str) -> str:
    """``prompt`` with ``word``'s span replaced by ``new_text``; the rest is kept byte for byte."""
    if prompt[word.start:word.end] != word.text:
        raise ValueError(
            f"word {word.text!r} (span {word.start}:{word.end}) is not a word of this prompt; "
            "take it from split_words(prompt) of the same prompt"
        )
    return prompt[: word.start] + new_text + prompt[word.end :]


def _replace_many(prompt: str, edits: Mapping[int, tuple[Word, str]]) -> str:
    """``prompt`` with several disjoint word spans replaced (keys: word index)."""
    parts: list[str] = []
    pos = 0
    for _, (word, new_text) in sorted(edits.items()):
        parts.append(prompt[pos : word.start])
        parts.append(new_text)
        pos = word.end
    parts.append(prompt[pos:])
    return "".join(parts)


# The NLTK English stop-word list (nltk.corpus.stopwords.words("english"), 179 words), copied
# here as data so that NLTK is not a dependency. It includes the contraction fragments NLTK
# lists ("don", "ll", "ve", ...), so e.g. "won" is never perturbed by default.
STOP_WORDS: frozenset[str] = frozenset(
    """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
    yourselves he him his himself she she's her hers herself it it's its itself they them
    their theirs themselves what which who whom this that that'll these those am is are was
    were be been being have has had having do does did doing a an the and but if or because
    as until while of at by for with about against between into through during before after
    above below to from up down in out on off over under again further then once here there
    when where why how all any both each few more most other some such no nor not only own
    same so than too very s t can will just don don't should should've now d ll m o re ve y
    ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven
    haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
    shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
    """.split()
)


def _is_stop_word(text: str) -> bool:
    return text.lower().replace("\u2019", "'") in STOP_WORDS


def _is_perturbable(word: Word, include_stop_words: bool) -> bool:
    # a word needs a letter: numbers ("3", "1024") are left alone, changing them changes the
    # meaning of the prompt rather than its spelling
    if not any(ch.isalpha() for ch in word.text):
        return False
    return include_stop_words or not _is_stop_word(word.text)


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


def _round_robin(groups: Sequence[Sequence[str]], rng: np.random.Generator, k: int) -> list[str]:
    """Up to ``k`` distinct strings taken one from each group in turn (group order and the
    order inside each group shuffled by ``rng``), so that candidates spread over groups."""
    shuffled = [[group[j] for j in rng.permutation(len(group))] for group in groups if group]
    order = [shuffled[j] for j in rng.permutation(len(shuffled))]
    out: dict[str, None] = {}
    depth = max((len(g) for g in order), default=0)
    for level in range(depth):
        for group in order:
            if level < len(group):
                out.setdefault(group[level], None)
                if len(out) >= k:
                    return list(out)
    return list(out)


# Standard US QWERTY adjacency for letters and digits (keys touching on the staggered layout:
# the left/right keys of the same row and the two overlapping keys of the rows above and
# below). Punctuation keys are left out so that a typo keeps the word a word.
QWERTY_NEIGHBOURS: Mapping[str, str] = {
    "1": "2q", "2": "13qw", "3": "24we", "4": "35er", "5": "46rt",
    "6": "57ty", "7": "68yu", "8": "79ui", "9": "80io", "0": "9op",
    "q": "12wa", "w": "23qeas", "e": "34wrsd", "r": "45etdf", "t": "56ryfg",
    "y": "67tugh", "u": "78yihj", "i": "89uojk", "o": "90ipkl", "p": "0ol",
    "a": "qwsz", "s": "weadzx", "d": "ersfxc", "f": "rtdgcv", "g": "tyfhvb",
    "h": "yugjbn", "j": "uihknm", "k": "iojlm", "l": "opk",
    "z": "asx", "x": "sdzc", "c": "dfxv", "v": "fgcb", "b": "ghvn", "n": "hjbm", "m": "jkn",
}  # fmt: skip


def _keyboard_neighbours(ch: str) -> str:
    """QWERTY neighbours of ``ch`` in ``ch``'s case ("" for a key not on the table)."""
    if not ch.isascii():
        return ""
    nbs = QWERTY_NEIGHBOURS.get(ch.lower(), "")
    return nbs.upper() if ch.isupper() else nbs


def typo_candidates(word: str, rng: np.random.Generator, k: int) -> list[str]:
    """Keyboard typos of ``word``: each candidate is one delete, insert, replace, adjacent swap
    or repeated character (Damerau-Levenshtein distance 1), the "typo" perturbation of Gao et
    al. 2023. Inserted and replacing characters are QWERTY neighbours of the key at that spot
    (an insert: of either adjacent character), in that key's case. Candidates are spread over
    the operations in an ``rng``-shuffled round robin; a one-character word is never deleted."""
    if k <= 0 or not word:
        return []
    n = len(word)
    delete = [word[:i] + word[i + 1 :] for i in range(n)] if n > 1 else []
    insert = [
        word[:i] + nb + word[i:]
        for i in range(n + 1)
        for ref in word[max(i - 1, 0) : i + 1]
        for nb in _keyboard_neighbours(ref)
    ]
    replace = [word[:i] + nb + word[i + 1 :] for i in range(n) for nb in _keyboard_neighbours(word[i])]
    swap = [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(n - 1)]
    repeat = [word[: i + 1] + word[i] + word[i + 1 :] for i in range(n)]
    groups = [[c for c in dict.fromkeys(g) if c != word] for g in (delete, insert, replace, swap, repeat)]
    return _round_robin(groups, rng, k)


@functools.lru_cache(maxsize=None)
def homoglyphs(ch: str) -> tuple[str, ...]:
    """Unicode confusables of the single character ``ch`` (Unicode's confusables.txt, as the
    ``confusable_homoglyphs`` package ships it), keeping only single code points that are not
    ASCII, are printable, are not combining marks, and are letters or digits (so the perturbed
    word stays one word)."""
    if len(ch) != 1:
        raise ValueError(f"homoglyphs() takes one character, got {ch!r}")
    found = confusables.is_confusable(ch, greedy=True, preferred_aliases=[])
    if not found:
        return ()
    out: dict[str, None] = {}
    for entry in found[0]["homoglyphs"]:
        g = entry["c"]
        if (
            len(g) == 1
            and g != ch
            and not g.isascii()
            and g.isprintable()
            and not unicodedata.category(g).startswith("M")
            and g.isalnum()
        ):
            out.setdefault(g, None)
    return tuple(out)


def glyph_candidates(word: str, rng: np.random.Generator, k: int) -> list[str]:
    """Glyph swaps of ``word``: one letter or digit replaced by a Unicode confusable (e.g. Latin
    "o" by Cyrillic "о"), the "glyph" perturbation of Gao et al. 2023. Every candidate differs
    from ``word`` at exactly one code point; candidates spread over positions first."""
    if k <= 0:
        return []
    groups = [
        [word[:i] + g + word[i + 1 :] for g in homoglyphs(ch)]
        for i, ch in enumerate(word)
        if ch.isalnum()
    ]
    return _round_robin(groups, rng, k)


_ASCII_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_CANDIDATE_WORD = re.compile(r"[a-z]+")


def _strip_phones(phones: str) -> str:
    """A CMU phone string without stress digits (and without the few '# comment' tails)."""
    return " ".join(re.sub(r"\d", "", phones.split("#", 1)[0]).split())


@dataclass(frozen=True)
class _PhoneticIndex:
    by_phones: Mapping[str, tuple[str, ...]]  # phones without stress -> words
    by_metaphone: Mapping[str, tuple[str, ...]]  # Metaphone code -> words
    inventory: tuple[str, ...]  # the phones (39 for CMUdict)


@functools.lru_cache(maxsize=1)
def _phonetic_index() -> _PhoneticIndex:
    """The CMU dictionary's alphabetic words by pronunciation and by Metaphone code, built
    once (about a second)."""
    pronouncing.init_cmu()
    by_phones: dict[str, set[str]] = {}
    words: set[str] = set()
    for word, phones in pronouncing.pronunciations:
        if _CANDIDATE_WORD.fullmatch(word):
            by_phones.setdefault(_strip_phones(phones), set()).add(word)
            words.add(word)
    by_metaphone: dict[str, set[str]] = {}
    for word in words:
        by_metaphone.setdefault(jellyfish.metaphone(word), set()).add(word)
    inventory = sorted({p for key in by_phones for p in key.split()})
    return _PhoneticIndex(
        by_phones={key: tuple(sorted(ws)) for key, ws in by_phones.items()},
        by_metaphone={key: tuple(sorted(ws)) for key, ws in by_metaphone.items()},
        inventory=tuple(inventory),
    )


def _phone_neighbours(phones: Sequence[str], inventory: Sequence[str]) -> Iterator[str]:
    """Every phone string at phoneme-level edit distance 1 from ``phones``."""
    n = len(phones)
    for i in range(n):
        yield " ".join([*phones[:i], *phones[i + 1 :]])
        for p in inventory:
            if p != phones[i]:
                yield " ".join([*phones[:i], p, *phones[i + 1 :]])
    for i in range(n + 1):
        for p in inventory:
            yield " ".join([*phones[:i], p, *phones[i:]])


def _match_case(template: str, word: str) -> str:
    """``word`` (lowercase) in ``template``'s case pattern: ALL-UPPER, Capitalised or lower."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _choose(pool: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` items of ``pool`` drawn by ``rng`` without replacement, kept in pool order."""
    if n <= 0:
        return []
    if len(pool) <= n:
        return list(pool)
    picked = np.sort(rng.choice(len(pool), size=n, replace=False))
    return [pool[int(j)] for j in picked]


def phonetic_candidates(word: str, rng: np.random.Generator, k: int) -> list[str]:
    """Homophones and near-homophones of ``word`` from the CMU Pronouncing Dictionary, the
    "phonetic" perturbation of Gao et al. 2023.

    Homophones (another word with the same phones, stress ignored) come first; the remaining
    slots are filled by near-homophones (phoneme edit distance 1), drawn by ``rng`` from the
    ``2 x slots`` with the smallest spelling edit distance. Each group is ordered by
    (spelling edit distance, word). A word the dictionary lacks falls back to dictionary words
    with the same Metaphone code. Candidates take ``word``'s case pattern; a word that is not
    a single ASCII alphabetic word (apostrophes allowed) gets none."""
    if k <= 0 or not _ASCII_WORD.fullmatch(word):
        return []
    index = _phonetic_index()
    key = word.lower()

    def ranked(ws: Iterable[str]) -> list[str]:
        return sorted((w for w in set(ws) if w != key), key=lambda w: (jellyfish.levenshtein_distance(key, w), w))

    prons = sorted({_strip_phones(p) for p in pronouncing.phones_for_word(key)})
    if prons:
        same: set[str] = set()
        near: set[str] = set()
        for phones in prons:
            same.update(index.by_phones.get(phones, ()))
            for other in _phone_neighbours(phones.split(), index.inventory):
                near.update(index.by_phones.get(other, ()))
        homophones, near_homophones = ranked(same), ranked(near - same)
    else:
        homophones, near_homophones = ranked(index.by_metaphone.get(jellyfish.metaphone(key), ())), []
    chosen = _choose(homophones, k, rng)
    slots = k - len(chosen)
    chosen += _choose(near_homophones[: 2 * slots], slots, rng)
    return [_match_case(word, w) for w in chosen]


@dataclass(frozen=True)
class Rule:
    """A named perturbation rule: ``fn(word, rng, k)`` returns up to ``k`` distinct candidates."""

    name: str
    fn: Callable[[str, np.random.Generator, int], list[str]]
    description: str

    def __call__(self, word: str, rng: np.random.Generator, k: int) -> list[str]:
        return self.fn(word, rng, k)


RULES: Mapping[str, Rule] = {
    "typo": Rule("typo", typo_candidates, "one keyboard slip: delete, QWERTY insert/replace, swap, repeat"),
    "glyph": Rule("glyph", glyph_candidates, "one character replaced by a Unicode confusable"),
    "phonetic": Rule("phonetic", phonetic_candidates, "a CMU homophone or near-homophone (Metaphone fallback)"),
}


def _rule(name: str) -> Rule:
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown rule {name!r}; valid rules: {', '.join(RULES)}") from None


# --------------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------------


def edit_fraction(original: str, perturbed: str) -> float:
    """Levenshtein distance from ``original`` to ``perturbed`` over ``len(original)``."""
    if not original:
        raise ValueError("edit_fraction: the original prompt is empty, the fraction is undefined")
    return jellyfish.levenshtein_distance(original, perturbed) / len(original)


@dataclass(frozen=True)
class Budget:
    """The attack budget of Gao et al. 2023: at most ``max_words`` words changed and at most
    ``max_edit_fraction`` of the prompt's characters edited (Levenshtein)."""

    max_words: int = 1
    max_edit_fraction: float = 0.1

    def __post_init__(self) -> None:
        mw = self.max_words
        if isinstance(mw, bool) or not isinstance(mw, (int, np.integer)) or mw < 1:
            raise ValueError(f"Budget.max_words must be an integer >= 1, got {mw!r}; pass max_words=1 or more")
        f = self.max_edit_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating, np.integer)) or not (0 < f <= 1):
            raise ValueError(
                f"Budget.max_edit_fraction must be a number in (0, 1], got {f!r}; "
                "pass e.g. max_edit_fraction=0.1 (10% of the prompt's characters)"
            )

    def allows(self, original: str, perturbed: str, n_words_changed: int) -> bool:
        """Whether changing ``n_words_changed`` words of ``original`` into ``perturbed`` fits."""
        if n_words_changed > self.max_words:
            return False
        return edit_fraction(original, perturbed) <= self.max_edit_fraction


# --------------------------------------------------------------------------------------------
# Prompt-level API
# --------------------------------------------------------------------------------------------

#: A rule is asked for this many times ``k`` candidates, so that ``k`` remain after the budget.
_OVERSAMPLE = 4
#: Candidates drawn per word by ``random_perturbation`` before one is picked.
_RANDOM_POOL = 16


def _check_prompt(prompt: str) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError(f"prompt is empty or whitespace only ({prompt!r}); pass a non-empty text prompt")


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded from a SHA-256 of ``parts`` (stable across runs and processes)."""
    digest = hashlib.sha256(json.dumps(["bench.attacks.perturb/v1", *parts]).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return int(seed)


def perturbable_words(prompt: str, include_stop_words: bool = False) -> list[Word]:
    """The words of ``prompt`` an attack may change: those with a letter that are not stop
    words (unless ``include_stop_words``)."""
    _check_prompt(prompt)
    return [w for w in split_words(prompt) if _is_perturbable(w, include_stop_words)]


def word_candidates(
    prompt: str,
    word_index: int,
    rule: str,
    seed: int = 0,
    k: int = 5,
    budget: Budget = Budget(),
    include_stop_words: bool = False,
) -> list[str]:
    """Up to ``k`` distinct perturbed prompts, each changing only word ``word_index`` (an index
    into ``split_words(prompt)``) with ``rule`` and within ``budget``; deterministic from
    (seed, prompt, word_index, rule). A word that may not be perturbed (a stop word, a number)
    or that has no candidate within the budget gives ``[]``."""
    _check_prompt(prompt)
    rule_obj = _rule(rule)
    seed = _seed(seed)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    words = split_words(prompt)
    if not (0 <= word_index < len(words)):
        raise ValueError(
            f"word_index {word_index!r} is out of range: the prompt has {len(words)} words "
            f"(indices 0..{len(words) - 1})"
        )
    word = words[word_index]
    if not _is_perturbable(word, include_stop_words):
        return []
    rng = _rng(seed, prompt, int(word_index), rule)
    out: list[str] = []
    for cand in rule_obj(word.text, rng, int(k) * _OVERSAMPLE):
        perturbed = replace_word(prompt, word, cand)
        if perturbed != prompt and budget.allows(prompt, perturbed, 1):
            out.append(perturbed)
            if len(out) == k:
                break
    return out


@dataclass(frozen=True)
class Perturbation:
    """One perturbed prompt: which words (indices into ``split_words(original)``) changed."""

    original: str
    perturbed: str
    rule: str
    words_changed: tuple[int, ...]
    edit_distance: int


def random_perturbation(
    prompt: str,
    rule: str,
    budget: Budget = Budget(),
    seed: int = 0,
    include_stop_words: bool = False,
) -> Perturbation | None:
    """The "human random attack" baseline of Gao et al. 2023: perturbable words are visited in
    a random order and each gets one random candidate of ``rule`` if the whole prompt stays
    within ``budget``, until ``budget.max_words`` words are changed; ``None`` when no word can
    be changed."""
    _check_prompt(prompt)
    rule_obj = _rule(rule)
    seed = _seed(seed)
    words = perturbable_words(prompt, include_stop_words)
    rng = _rng("random", seed, prompt, rule, include_stop_words)
    chosen: dict[int, tuple[Word, str]] = {}
    for j in rng.permutation(len(words)):
        if len(chosen) >= budget.max_words:
            break
        word = words[int(j)]
        cands = rule_obj(word.text, rng, _RANDOM_POOL)
        for c in rng.permutation(len(cands)):
            trial = {**chosen, word.index: (word, cands[int(c)])}
            if budget.allows(prompt, _replace_many(prompt, trial), len(trial)):
                chosen = trial
                break
    if not chosen:
        return None
    perturbed = _replace_many(prompt, chosen)
    return Perturbation(
        original=prompt,
        perturbed=perturbed,
        rule=rule,
        words_changed=tuple(sorted(chosen)),
        edit_distance=jellyfish.levenshtein_distance(prompt, perturbed),
    )
