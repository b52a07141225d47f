"""The CLIP-layout BPE tokenizer trained with ``tokenizers`` loads in transformers' CLIP tokenizers."""

import json

import pytest

from bench.tokenizer import BOS, EOS, bytes_to_unicode, save_clip_tokenizer, train_clip_bpe

CORPUS = ["a dark large patterned coat", "a photo of an ankle boot", "a pair of light trousers",
          "a t-shirt that is plain", "A Sneaker, running shoe!", "a small  bag\twith stripes"] * 50


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    vocab, merges = train_clip_bpe(CORPUS, 120)
    return save_clip_tokenizer(tmp_path_factory.mktemp("tok"), vocab, merges), vocab, merges


def test_vocab_has_clips_layout(folder):
    _, vocab, merges = folder
    base = list(bytes_to_unicode().values())
    ids = sorted(vocab, key=vocab.get)
    assert ids[:256] == base and ids[256:512] == [c + "</w>" for c in base]
    assert ids[-2:] == [BOS, EOS]
    assert 0 < len(merges) <= 120
    assert all("".join(m) in vocab for m in merges)


def test_slow_and_fast_clip_tokenizers_agree_and_words_are_single_tokens(folder):
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    path = folder[0]
    slow, fast = CLIPTokenizer.from_pretrained(path), CLIPTokenizerFast.from_pretrained(path)
    texts = [*set(CORPUS), "an image showing a jumper on a black background 123 \u00fcn\u00efcode"]
    for t in texts:
        assert slow(t).input_ids == fast(t).input_ids, t
    ids = slow("a dark large patterned coat").input_ids
    assert slow.convert_ids_to_tokens(ids) == [BOS, "a</w>", "dark</w>", "large</w>", "patterned</w>",
                                               "coat</w>", EOS]
    assert ids[-1] == slow.eos_token_id == len(slow) - 1 and slow.pad_token == EOS
    # unseen words and non-ASCII text fall back to bytes and decode back
    unseen = "an image showing a jumper \u00fcn\u00efcode"
    assert slow.decode(slow(unseen).input_ids, skip_special_tokens=True).strip() == unseen
    assert slow.decode(slow("123").input_ids, skip_special_tokens=True).strip() == "1 2 3"  # as CLIP


def test_training_is_deterministic_and_lowercases(folder, tmp_path):
    vocab, merges = train_clip_bpe(CORPUS, 120)
    assert (vocab, merges) == (folder[1], folder[2])
    save_clip_tokenizer(tmp_path, vocab, merges)
    assert json.loads((tmp_path / "vocab.json").read_text()) == vocab
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tmp_path)
    assert tok("A DARK Coat").input_ids == tok("a dark coat").input_ids
    assert train_clip_bpe(CORPUS, 10)[1] == merges[:10]  # merges come in frequency order
