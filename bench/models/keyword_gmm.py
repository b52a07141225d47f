"""A text-conditional Gaussian-mixture oracle whose output depends on one keyword of the prompt:
the known answer the prompt-robustness attacks are checked on.

``gmm-keyword`` is the ``gmm`` oracle (``bench.models.gmm``) with one keyword per component: a
prompt whose words (``bench.attacks.perturb.split_words``, case-insensitive) contain keyword k
generates exactly component k; a prompt with none of them generates the whole mixture. So
deleting or misspelling the keyword changes the distribution of the samples, and no change to
any other word does: word importance must rank the keyword first, and only attacks on it can
succeed.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import Tensor

from bench.conditions import Condition
from bench.errors import BenchError
from bench.models.gmm import GMMDenoiser, GMMOracle
from bench.registry import MODELS


class _RowsDenoiser:
    """The oracle's denoiser taking a ``Cond`` (rows = component per sample, -1: the mixture)."""

    def __init__(self, inner: GMMDenoiser) -> None:
        self.inner = inner

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        return self.inner(x, sigma, None if cond is None else cond.rows.to(x.device))

    def __getattr__(self, name: str) -> Any:  # schedule, cache_key, sample_data, ...
        return getattr(self.inner, name)


@MODELS.register("gmm-keyword", "Text-conditional Gaussian-mixture oracle: the component is the "
                 "one whose keyword the prompt contains (known answer for robustness attacks)")
class KeywordGMM(GMMOracle):
    """``keywords``: one word per mixture component; every other parameter is the gmm
    oracle's (give ``components`` = the number of keywords, or ``means``)."""

    conditioning = "prompts"

    def __init__(self, *, keywords: Sequence[str] = (), **params: Any) -> None:
        from bench.attacks.perturb import split_words

        if not isinstance(keywords, (list, tuple)) or not keywords:
            raise BenchError(f"gmm-keyword: field 'keywords' = {keywords!r}; give one word per "
                             f"component, e.g. 'keywords: [boot, coat]'.")
        for w in keywords:
            if not isinstance(w, str) or [x.text for x in split_words(w)] != [w]:
                raise BenchError(f"gmm-keyword: field 'keywords': {w!r} is not a single word; "
                                 f"give words without spaces or punctuation.")
        lowered = [w.lower() for w in keywords]
        if len(set(lowered)) != len(lowered):
            raise BenchError(f"gmm-keyword: field 'keywords' = {list(keywords)}: keywords must "
                             f"differ (case-insensitively).")
        params.setdefault("components", len(keywords))
        super().__init__(**params)
        if len(self.w) != len(keywords):
            raise BenchError(f"gmm-keyword: {len(keywords)} keywords for {len(self.w)} "
                             f"components; give one keyword per component.")
        self.keywords = tuple(lowered)
        self.params["keywords"] = list(self.keywords)

    def component(self, text: str) -> int:
        """The component of the first keyword among the prompt's words; -1 if none is there."""
        from bench.attacks.perturb import split_words

        for w in split_words(text):
            if w.text.lower() in self.keywords:
                return self.keywords.index(w.text.lower())
        return -1

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "type": "gmm-keyword"}

    def label(self) -> str:
        return "'gmm-keyword'"

    def encode(self, conditions: Sequence[Condition], negative_prompt: str = ""
               ) -> tuple[Tensor, Tensor | None]:
        rows = torch.tensor([self.component(str(c.text)) for c in conditions], dtype=torch.long)
        return rows, torch.full_like(rows, -1)

    def load(self, device: torch.device | str = "cpu") -> Any:
        if self.guidance is not None:
            raise BenchError("gmm-keyword: field 'guidance' is not supported; the prompt picks "
                             "the component.")
        return _RowsDenoiser(GMMDenoiser(self, torch.device(device)))


def _signature() -> inspect.Signature:
    """The gmm oracle's parameters plus ``keywords`` (what suites may set and sweep)."""
    base = inspect.signature(GMMOracle.__init__)
    kw = inspect.Parameter("keywords", inspect.Parameter.KEYWORD_ONLY, default=(),
                           annotation="Sequence[str]")
    return base.replace(parameters=[*base.parameters.values(), kw])


KeywordGMM.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
