"""A CLIP-format byte-level BPE tokenizer trained here with Hugging Face ``tokenizers``.

CLIP (Radford et al., 2021) tokenizes lower-cased, whitespace-normalised text with a byte-level
BPE whose words end in ``</w>``; its files are ``vocab.json`` (the 256 byte symbols, the same with
``</w>``, one token per merge in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``) and
``merges.txt``. :func:`train_clip_bpe` learns the merges on a corpus pre-tokenised by
``tokenizers`` exactly as CLIP's fast tokenizer does (NFC, ``\\s+`` -> space, lower case, CLIP's
split pattern, byte-level symbols) and lays the vocabulary out as CLIP does, so
``transformers.CLIPTokenizer`` and ``CLIPTokenizerFast`` load the folder that :func:`save_clip_tokenizer` writes and give the same ids.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

#: CLIP's pre-tokenisation pattern (``CLIPTokenizer``), without its special-token alternatives
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's map from the 256 byte values to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_words(texts: Iterable[str]) -> Counter[tuple[str, ...]]:
    """Word counts as CLIP pre-tokenises: NFC, ``\\s+`` -> space, lower case, CLIP's split
    pattern, byte-level symbols (all from ``tokenizers``); the last symbol carries ``</w>``."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    norm = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                 normalizers.Lowercase()])
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            counts[(*word[:-1], word[-1] + "</w>")] += 1
    return counts


def train_clip_bpe(texts: Iterable[str], n_merges: int, min_frequency: int = 2
                   ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a CLIP-layout byte-level BPE with at most ``n_merges`` merges.

    Each merge joins the most frequent adjacent pair (Sennrich et al., 2016), ties broken by
    the pair's text, so the same corpus always gives the same files. (``tokenizers``'
    ``BpeTrainer`` breaks ties in hash order, which differs between processes: seen here.)
    """
    words = clip_words(texts)
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, c in words.items():
            for pair in zip(w, w[1:]):
                pairs[pair] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        joined = best[0] + best[1]
        new: Counter[tuple[str, ...]] = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    base = list(bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab, merges


def save_clip_tokenizer(folder: str | Path, vocab: dict[str, int], merges: list[tuple[str, str]],
                        model_max_length: int = 77) -> Path:
    """Write ``vocab.json`` / ``merges.txt`` and save them as a ``CLIPTokenizer`` folder (slow and
    fast tokenizer files both)."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    slow = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=model_max_length)
    slow.save_pretrained(folder)
    CLIPTokenizerFast.from_pretrained(folder).save_pretrained(folder)
    return folder
