"""Eval ``robustness``: prompt-robustness attacks of Gao et al. 2023 (arXiv 2306.13103) on a
text-conditional model, judged on the distribution of generated images.

A loop eval: one shard per (model, sampler, NFE) cell. The cell's samples pick the prompts
attacked (sample ``i`` has condition ``i mod K``; the distinct conditions of the cell's
samples, in order). For each prompt, each rule (typo, glyph, phonetic) and each search
(greedy, greedy-text, random; ``bench.attacks.search``; greedy-text ranks words by the CLIP
text embedding's cosine distance when each is deleted) runs one attack of at most ``queries``
queries. A query generates ``images`` images of a prompt from the same initial noises as the
original prompt's images (sample indices 0..images-1 of the cell's seed: common random numbers)
and measures them against the original prompt's images (``bench.attacks.objectives``):

* ``mmd2`` / ``mmd_p``: unbiased MMD² on CLIP image embeddings and its permutation p-value;
* ``kl``: the CLIP KL surrogate (sign: positive = the perturbed images sit closer to the
  perturbed text than to the original);
* ``clipscore`` / ``clipscore_drop`` / ``mw_p``: the perturbed images' mean CLIPScore against
  the *original* prompt, its drop from the original images', and the one-sided Mann-Whitney
  p-value of that drop.

The search maximises ``objective``; an attack succeeds when ``test``'s p-value is below the
per-query level: ``alpha / queries`` with ``correction: bonferroni`` (the default: ``alpha`` is
then the chance that an attack on a model that ignores the change "succeeds" by luck at least
once over its ``queries`` tests; uncorrected, 10 queries at 0.05 would give up to 40%), or
``alpha`` itself with ``correction: none``. With ``clip: null`` the embeddings are the raw
samples (oracles), and only the MMD objective and test exist. Every query is logged and
checkpointed; a resumed shard replays the log (the searches are deterministic), so it ends with
the same rows as an uninterrupted one.

Rows: ``attack_success_rate`` per ``rule=R,search=S`` and per ``search=S`` (Wilson 95% CI over
attacked prompts), ``attack_queries`` (mean queries spent), the success rate within the first
``q`` queries for q = 1..queries (slice ``search=S,within=q``: the attacks whose first success
came at query q or earlier; as every search stops at its first success and decides its early
queries without looking at the budget, except greedy's importance ranking when the budget is
smaller than the prompt's word count, this is the success rate a budget of ``q`` would give
judged at the full budget's level, stricter than a ``q``-query attack's own ``alpha / q``), and
per attack (slice ``prompt=ID,rule=R,search=S``) ``attack_objective``, ``attack_p_value``,
``attack_success``, ``attack_edit_distance``, ``attack_queries_to_success``. The per-sample
table holds one row per query (``phase`` importance | candidate | random; ``candidate`` the
queried prompt; ``accepted``) and one ``phase = result`` row per attack (``candidate`` = the
adversarial prompt).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.attacks.objectives import (clipscore_drop, kl_surrogate, mannwhitney_p,
                                      mmd_permutation_test)
from bench.attacks.perturb import RULES, Budget
from bench.attacks.search import SEARCHES, AttackResult, Outcome
from bench.conditions import Condition
from bench.errors import BenchError, FieldError
from bench.evals.base import Eval, Models, ShardResult
from bench.evals.gallery import gallery_dir
from bench.generate import SamplerSpec, generate
from bench.metrics.base import Output
from bench.registry import EVALS

if TYPE_CHECKING:
    import pandas as pd

#: the results folder's subfolder of original-vs-adversarial images (``bench.store`` layout)
ATTACKS_DIR = "_attacks"
OBJECTIVES = {"clipscore_drop": "clipscore_drop", "kl": "kl", "mmd": "mmd2"}
TESTS = {"mannwhitney": "mw_p", "mmd": "mmd_p"}
CORRECTIONS = ("bonferroni", "none")
WILSON = "Wilson score 95% interval over attacked prompts"
OUTPUTS = {
    "attack_success_rate": Output(False, WILSON, "share of prompts whose attack succeeded "
                                  "(lower: a more robust model)"),
    "attack_queries": Output(None, "none (mean over attacks)", "generated sets per attack"),
    "attack_objective": Output(None, "none (one attack)", "the searched objective of the "
                               "adversarial prompt", nan_means="no candidate was queried"),
    "attack_p_value": Output(None, "none (one attack)", "the success test's p-value of the "
                             "adversarial prompt", nan_means="no candidate was queried"),
    "attack_success": Output(None, "none (one attack)", "1 if the attack succeeded"),
    "attack_edit_distance": Output(None, "none (one attack)", "Levenshtein distance of the "
                                   "adversarial prompt from the original"),
    "attack_queries_to_success": Output(None, "none (one attack)", "generated sets spent up to "
                                        "and including the first success",
                                        nan_means="the attack did not succeed"),
}


def success_level(alpha: float, queries: int, correction: str) -> float:
    """The p-value below which one query counts as a success (module doc)."""
    return alpha / queries if correction == "bonferroni" else alpha


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _outcome_dict(o: Outcome | None) -> dict[str, Any] | None:
    return None if o is None else {"objective": o.objective, "p_value": o.p_value, "values": o.values}


def _attack_dict(r: AttackResult) -> dict[str, Any]:
    return {"original": r.original, "adversarial": r.adversarial, "rule": r.rule,
            "search": r.search, "words_changed": list(r.words_changed),
            "edit_distance": r.edit_distance, "outcome": _outcome_dict(r.outcome),
            "success": r.success, "note": r.note,
            "steps": [{"query": s.query, "phase": s.phase, "prompt": s.prompt,
                       "word_index": s.word_index, "accepted": s.accepted,
                       "outcome": _outcome_dict(s.outcome)} for s in r.steps]}


@EVALS.register("robustness", "Prompt-robustness attacks (typo / glyph / phonetic x greedy / "
                "greedy-text / random) judged on image distributions (params: rules, searches, images, queries, "
                "candidates, budget, objective, test, alpha, correction, clip)")
class Robustness(Eval):
    shape = "loop"
    report_sections = "bench.report.robustness:robustness_sections"
    outputs = OUTPUTS

    def __init__(self, *, rules: Any = ("typo", "glyph", "phonetic"),
                 searches: Any = ("greedy", "random"), images: int = 16, queries: int = 10,
                 candidates: int = 3, budget: Any = None, objective: str = "clipscore_drop",
                 test: str = "mannwhitney", alpha: float = 0.05, correction: str = "bonferroni",
                 permutations: int = 200,
                 clip: str | None = "fmnist-clip", arch: str = "ViT-B-32",
                 include_stop_words: bool = False, attack_seed: int = 0, gallery: int = 4) -> None:
        rules = [rules] if isinstance(rules, str) else rules
        searches = [searches] if isinstance(searches, str) else searches
        for name, got, known in (("rules", rules, RULES), ("searches", searches, SEARCHES)):
            if not isinstance(got, (list, tuple)) or not got:
                raise FieldError(name, f"= {got!r}.", f"give a list of: {', '.join(known)}.")
            for g in got:
                if g not in known:
                    raise FieldError(name, f"has {g!r}, which is not known.",
                                     f"use any of: {', '.join(known)}.")
        if clip is None and "greedy-text" in searches:
            raise FieldError("searches", "has 'greedy-text', which ranks words with a CLIP text "
                             "encoder, but clip is null.", "give a CLIP (e.g. clip: fmnist-clip), "
                             "or use search 'greedy'.")
        for name, v, lo in (("images", images, 2), ("queries", queries, 1),
                            ("candidates", candidates, 1), ("permutations", permutations, 1),
                            ("attack_seed", attack_seed, 0), ("gallery", gallery, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise FieldError(name, f"= {v!r}.", f"use a whole number >= {lo}.")
        b = budget or {}
        if not isinstance(b, dict) or set(b) - {"max_words", "max_edit_fraction"}:
            raise FieldError("budget", f"= {budget!r}.", "write 'budget: {max_words: 1, "
                             "max_edit_fraction: 0.1}'.")
        try:
            self.budget = Budget(**b)
        except ValueError as exc:
            raise FieldError("budget", str(exc), "see the message above.") from None
        if objective not in OBJECTIVES:
            raise FieldError("objective", f"= {objective!r}.", f"use one of: {', '.join(OBJECTIVES)}.")
        if test not in TESTS:
            raise FieldError("test", f"= {test!r}.", f"use one of: {', '.join(TESTS)}.")
        if clip is None and (objective != "mmd" or test != "mmd"):
            raise FieldError("clip", "is null (raw samples as embeddings), which has no text "
                             f"tower for objective {objective!r} / test {test!r}.",
                             "give a CLIP (e.g. clip: fmnist-clip), or objective: mmd and test: mmd.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise FieldError("alpha", f"= {alpha!r}.", "use a significance level in (0, 1), e.g. 0.05.")
        if correction not in CORRECTIONS:
            raise FieldError("correction", f"= {correction!r}.", f"use one of: {', '.join(CORRECTIONS)}.")
        self.rules, self.searches = list(rules), list(searches)
        self.images, self.queries, self.candidates = images, queries, candidates
        self.objective, self.test, self.alpha = objective, test, float(alpha)
        self.level = success_level(self.alpha, queries, correction)
        if test == "mmd" and 1 / (permutations + 1) >= self.level:
            need = math.floor(1 / self.level)
            raise FieldError("permutations", f"= {permutations}: the permutation test's smallest "
                             f"p-value, 1/{permutations + 1}, cannot fall below the success level "
                             f"{self.level:.3g} (alpha {self.alpha:g}, correction {correction}).",
                             f"use permutations >= {need}, or a larger alpha.")
        self.permutations, self.clip, self.arch = permutations, clip, arch
        self.include_stop_words, self.attack_seed = bool(include_stop_words), attack_seed
        self.gallery = min(gallery, images)
        super().__init__(rules=self.rules, searches=self.searches, images=images, queries=queries,
                         candidates=candidates, budget={"max_words": self.budget.max_words,
                                                        "max_edit_fraction": self.budget.max_edit_fraction},
                         objective=objective, test=test, alpha=self.alpha, correction=correction,
                         permutations=permutations,
                         clip=clip, arch=arch, include_stop_words=self.include_stop_words,
                         attack_seed=attack_seed, gallery=self.gallery)

    def metric_specs(self) -> list[tuple[str, dict[str, Any]]]:
        return [] if self.clip is None else [("clipscore", {"clip": self.clip, "arch": self.arch})]

    # ------------------------------------------------------------------ one shard
    def _prompts(self, shard: Any) -> list[Condition]:
        conds = shard.conditions.for_indices(range(shard.start, shard.stop))
        if conds is None or shard.conditions.kind != "prompts":
            raise BenchError("eval 'robustness' attacks prompts: give the suite 'conditions: "
                             "{prompts: [...]}' (or a prompt file) and a text-conditional model.")
        out = list(dict.fromkeys(conds))
        for c in out:
            if not str(c.text or "").strip():
                raise BenchError(f"eval 'robustness': prompt {c.id!r} is empty; remove it from "
                                 f"the prompt list or give it text.")
        return out

    def run_shard(self, shard: Any, models: Models, cache_dir: Any = None,
                  progress: Any = None) -> ShardResult:
        t_start = time.perf_counter()
        loaded = models.get(shard.model, shard.device)
        prompts = self._prompts(shard)
        scorer = None
        if self.clip is not None:
            from bench.metrics.base import MetricContext
            from bench.metrics.clipscore import ClipScore

            scorer = ClipScore(MetricContext(loaded.adapter, loaded.device, cache_dir,
                                             {"clip": self.clip, "arch": self.arch}, model=loaded))
        saved = progress.resume() if progress is not None else None
        meta: dict[str, Any] = saved[2] if saved else {"log": [], "attacks": [], "network_calls": 0,
                                                      "sample_s": 0.0, "model_s": 0.0, "decode_s": 0.0,
                                                      "metric_s": 0.0, "attempts": 0}
        meta["attempts"] += 1
        known = {(int(i), str(p)): v for i, p, v in meta["log"]}
        done = {(int(a["cond"]), a["rule"], a["search"]) for a in meta["attacks"]}
        spec = SamplerSpec.from_dict(shard.sampler, shard.steps)
        neg = shard.conditions.negative_prompt
        idx = np.arange(self.images, dtype=np.int64)

        def images_of(text: str) -> np.ndarray:
            """The embeddings (images, D) of one prompt's images (raw samples without a CLIP)."""
            parts, imgs = [], []
            cond = Condition(id="query", text=text)
            for b0 in range(0, self.images, shard.batch_size):
                sub = idx[b0:b0 + shard.batch_size]
                gen = generate(loaded, spec, sub, shard.seed, [cond] * len(sub), negative_prompt=neg,
                               decode=scorer is not None)
                meta["network_calls"] += gen.network_calls
                meta["sample_s"] += gen.timings["sample_s"]
                meta["model_s"] += gen.timings["model_s"]
                meta["decode_s"] += gen.timings.get("decode_s", 0.0)
                if scorer is None:
                    parts.append(gen.samples.reshape(len(sub), -1).double().cpu().numpy())
                else:
                    imgs.append(gen.images)
            if scorer is None:
                return np.concatenate(parts)
            t0 = time.perf_counter()
            emb = scorer.image_embeddings(torch.cat(imgs))
            meta["metric_s"] += time.perf_counter() - t0
            return emb

        def distance(a: str, b: str) -> float:
            """Cosine distance of the CLIP text embeddings (greedy-text's word importance)."""
            t = scorer.text_embeddings([a, b])
            return float(1.0 - t[0] @ t[1])

        bar = tqdm(total=len(prompts) * len(self.rules) * len(self.searches), disable=None,
                   desc=f"{shard.label()} attacks", leave=False)
        for ci, cond in enumerate(prompts):
            original = str(cond.text)
            base: dict[str, Any] = {}

            def query(text: str, ci: int = ci, original: str = original,
                      base: dict[str, Any] = base) -> Outcome:
                key = (ci, text)
                if key not in known:
                    if not base:
                        base["emb"] = images_of(original)
                        if scorer is not None:
                            base["scores"] = self._scores(scorer, base["emb"], original)
                    emb = images_of(text)
                    t0 = time.perf_counter()
                    known[key] = self._measure(base, emb, original, text, scorer)
                    meta["metric_s"] += time.perf_counter() - t0
                    meta["log"].append([ci, text, known[key]])
                    if progress is not None:
                        progress.update(len(meta["log"]), {}, meta)
                        progress.save()
                v = known[key]
                return Outcome(v[OBJECTIVES[self.objective]], v[TESTS[self.test]], dict(v))

            for rule in self.rules:
                for search in self.searches:
                    if (ci, rule, search) in done:
                        bar.update()
                        continue
                    res = SEARCHES[search](
                        original, rule, query, budget=self.budget, queries=self.queries,
                        k=self.candidates, alpha=self.level, seed=self.attack_seed,
                        include_stop_words=self.include_stop_words, distance=distance)
                    meta["attacks"].append({"cond": ci, **_attack_dict(res)})
                    done.add((ci, rule, search))
                    if progress is not None:
                        progress.update(len(meta["log"]), {}, meta)
                        progress.save()
                    bar.update()
        bar.close()
        if scorer is not None and self.gallery and cache_dir is not None:
            self._save_galleries(shard, loaded, spec, prompts, meta["attacks"], Path(cache_dir).parent)
        meta.update(prompts=[{"id": c.id, "text": c.text, "category": c.category} for c in prompts],
                    wall_s=meta.get("wall_s", 0.0) + time.perf_counter() - t_start,
                    device=models.device_name(loaded), n_samples=len(prompts) * self.images)
        return {}, meta

    def _save_galleries(self, shard: Any, loaded: Any, spec: SamplerSpec, prompts: list[Condition],
                        attacks: list[dict[str, Any]], results_dir: Path) -> None:
        """The first ``gallery`` images of the original and of the adversarial prompt of every
        attack that queried a candidate, regenerated from the same noises (deterministic, so a
        resumed shard writes the same files): ``gallery_dir(..., ATTACKS_DIR)/<n>.npz``."""
        from bench.integrity import save_npz

        folder = gallery_dir(results_dir, shard.suite, shard.model["label"], shard.sampler["label"],
                             shard.nfe, root=ATTACKS_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        idx = np.arange(self.gallery, dtype=np.int64)
        cache: dict[str, np.ndarray] = {}

        def images(text: str) -> np.ndarray:
            if text not in cache:
                gen = generate(loaded, spec, idx, shard.seed, [Condition(id="g", text=text)] * len(idx),
                               negative_prompt=shard.conditions.negative_prompt, decode=True)
                cache[text] = gen.images.cpu().numpy()
            return cache[text]

        for n, a in enumerate(sorted(attacks, key=lambda a: (a["cond"], a["rule"], a["search"]))):
            if a["outcome"] is None:
                continue
            c = prompts[a["cond"]]
            info = {"cond_id": c.id, "category": c.category, "rule": a["rule"],
                    "search": a["search"], "original": a["original"],
                    "adversarial": a["adversarial"], "success": a["success"],
                    "p_value": a["outcome"]["p_value"], "objective": a["outcome"]["objective"]}
            save_npz(folder / f"{n:05d}.npz", {"original": images(a["original"]),
                                               "adversarial": images(a["adversarial"]),
                                               "info": np.array(json.dumps(info))})

    def _scores(self, scorer: Any, emb: np.ndarray, prompt: str) -> np.ndarray:
        from bench.metrics.clipscore import scores

        t = scorer.text_embeddings([prompt])[0]
        return scores(emb @ t, scorer.p["scale"], scorer.p["clamp"])

    def _measure(self, base: dict[str, Any], emb: np.ndarray, original: str, text: str,
                 scorer: Any) -> dict[str, float]:
        mmd2, p = mmd_permutation_test(base["emb"], emb, self.permutations, seed=self.attack_seed)
        out = {"mmd2": mmd2, "mmd_p": p}
        if scorer is not None:
            s = self._scores(scorer, emb, original)
            t = scorer.text_embeddings([original, text])
            alpha = scorer.clip.logit_scale()
            out.update(kl=kl_surrogate(emb, t[0], t[1], alpha), clipscore=float(s.mean()),
                       clipscore_drop=clipscore_drop(base["scores"], s),
                       mw_p=mannwhitney_p(base["scores"], s))
        return {k: float(v) for k, v in out.items()}

    # ------------------------------------------------------------------ rows
    def _to_success(self, attack: dict[str, Any]) -> float:
        """Queries spent up to and including the first success (NaN: none succeeded)."""
        if not attack["success"]:
            return float("nan")
        return float(next(s["query"] for s in attack["steps"] if s["phase"] != "importance"
                          and s["outcome"]["p_value"] < self.level) + 1)

    def finalize(self, shards: list[Any], results: list[ShardResult]
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
        import pandas as pd

        _, meta = results[0]
        prompts = meta["prompts"]
        common = {"n_samples": meta["n_samples"], "network_calls": meta["network_calls"],
                  "sample_s": meta["sample_s"], "model_s": meta["model_s"],
                  "metric_s": meta["metric_s"],
                  "wall_s": meta["wall_s"], "device": meta["device"], "step": 0,
                  "ci_low": float("nan"), "ci_high": float("nan")}
        attacks = sorted(meta["attacks"], key=lambda a: (a["cond"], self.rules.index(a["rule"]),
                                                         self.searches.index(a["search"])))
        rows: list[dict[str, Any]] = []
        table: list[dict[str, Any]] = []
        nan = float("nan")
        for a in attacks:
            c = prompts[a["cond"]]
            sl = f"prompt={c['id']},rule={a['rule']},search={a['search']}"
            o = a["outcome"]
            for metric, value in (("attack_objective", o["objective"] if o else nan),
                                  ("attack_p_value", o["p_value"] if o else nan),
                                  ("attack_success", float(a["success"])),
                                  ("attack_edit_distance", float(a["edit_distance"])),
                                  ("attack_queries_to_success", self._to_success(a))):
                rows.append({**common, "slice": sl, "metric": metric, "value": value,
                             "n_samples": self.images})
            lead = {"cond_id": c["id"], "cond_text": c["text"], "category": c["category"],
                    "rule": a["rule"], "search": a["search"]}
            for s in a["steps"]:
                table.append({**lead, "phase": s["phase"], "query": s["query"],
                              "candidate": s["prompt"], "word_index": s["word_index"],
                              "accepted": s["accepted"], "objective": s["outcome"]["objective"],
                              "p_value": s["outcome"]["p_value"], **s["outcome"]["values"],
                              "success": s["outcome"]["p_value"] < self.level, "note": ""})
            table.append({**lead, "phase": "result", "query": len(a["steps"]),
                          "candidate": a["adversarial"], "word_index": -1, "accepted": True,
                          "objective": o["objective"] if o else nan,
                          "p_value": o["p_value"] if o else nan, **(o["values"] if o else {}),
                          "success": a["success"], "note": a["note"],
                          "words_changed": ",".join(map(str, a["words_changed"])),
                          "edit_distance": a["edit_distance"]})
        groups: dict[str, list[dict[str, Any]]] = {}
        for a in attacks:
            groups.setdefault(f"rule={a['rule']},search={a['search']}", []).append(a)
        for search in self.searches:
            groups[f"search={search}"] = [a for a in attacks if a["search"] == search]
        for sl, members in groups.items():
            k, n = sum(a["success"] for a in members), len(members)
            lo, hi = wilson(k, n)
            rows.append({**common, "slice": sl, "metric": "attack_success_rate",
                         "value": k / n if n else nan, "ci_low": lo, "ci_high": hi,
                         "n_samples": n})
            rows.append({**common, "slice": sl, "metric": "attack_queries",
                         "value": float(np.mean([len(a["steps"]) for a in members])) if n else nan,
                         "n_samples": n})
        for search in self.searches:
            members = [self._to_success(a) for a in attacks if a["search"] == search]
            for q in range(1, self.queries + 1):
                k, n = sum(t <= q for t in members), len(members)
                lo, hi = wilson(k, n)
                rows.append({**common, "slice": f"search={search},within={q}",
                             "metric": "attack_success_rate", "value": k / n if n else nan,
                             "ci_low": lo, "ci_high": hi, "n_samples": n})
        frame = pd.DataFrame(table)
        frame.insert(0, "index", np.arange(len(frame), dtype=np.int64))
        return rows, frame
