"""Conditions as data: prompt files in the formats benchmarks ship, errors that name the line,
and one cached encoder per loaded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.conditions import Condition, Conditions, load_prompts
from bench.errors import BenchError
from bench.generate import LoadedModel


def test_partiprompts_tsv_and_drawbench_csv_load_as_they_are(tmp_path):
    parti = tmp_path / "PartiPrompts.tsv"
    parti.write_text("Prompt\tCategory\tChallenge\tNote\n"
                     "bond\tAbstract\tBasic\t\n"
                     "a red sneaker on a shelf\tProducts\tColors\tx\n")
    items, source = load_prompts(str(parti))
    assert [(c.id, c.text, c.category) for c in items] == [
        ("p0000", "bond", "Abstract"), ("p0001", "a red sneaker on a shelf", "Products")]
    assert source == "PartiPrompts.tsv"
    draw = tmp_path / "drawbench.csv"
    draw.write_text('Prompts,Category\n"A red colored car.",Colors\n"A black, striped dress",Colors\n')
    items, _ = load_prompts(str(draw))
    assert [c.text for c in items] == ["A red colored car.", "A black, striped dress"]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"id": "q1", "caption": "a bag"}\n{"id": "q2", "caption": "a boot"}\n')
    items, _ = load_prompts(str(jl))
    assert [(c.id, c.text) for c in items] == [("q1", "a bag"), ("q2", "a boot")]
    txt = tmp_path / "p.txt"
    txt.write_text("a shirt\na coat\n")
    assert [c.text for c in load_prompts(str(txt))[0]] == ["a shirt", "a coat"]
    assert [c.text for c in load_prompts("p.txt", base=tmp_path)[0]] == ["a shirt", "a coat"]


@pytest.mark.parametrize("name, text, match", [
    ("empty.txt", "a shirt\n\na coat\n", "line 2: empty prompt"),
    ("nocol.csv", "foo,bar\n1,2\n", "no text column.*columns: foo, bar.*text_column"),
    ("dup.csv", "id,prompt\na,x\na,y\n", "line 3: id 'a' appears twice"),
    ("x.pdf", "a", "unknown type '.pdf'"),
    ("bad.jsonl", '{"prompt": "a"}\nnot json\n', "line 2: not JSON"),
])
def test_prompt_file_errors_name_file_line_and_fix(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(BenchError, match=match):
        load_prompts(str(p))


def test_inline_and_missing(tmp_path):
    with pytest.raises(BenchError, match="is not a file"):
        load_prompts(str(tmp_path / "nope.tsv"))
    with pytest.raises(BenchError, match=r"prompts\[1\]' = ''"):
        load_prompts(["a", ""])
    items, _ = load_prompts(["a cat", "a dog"])
    assert [c.id for c in items] == ["p0000", "p0001"]


def test_sample_i_gets_condition_i_mod_k_and_digest_changes_with_content():
    a = Conditions("prompts", (Condition("p0", text="a"), Condition("p1", text="b")))
    assert [c.id for c in a.for_indices(np.arange(5))] == ["p0", "p1", "p0", "p1", "p0"]
    b = Conditions("prompts", (Condition("p0", text="a"), Condition("p1", text="B")))
    assert a.digest() != b.digest() and Conditions().for_indices([0, 1]) is None


class CountingAdapter:
    """Encodes a condition as its label; counts the conditions it was asked to encode."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, conditions, negative_prompt=""):
        self.seen += [c.id for c in conditions]
        rows = torch.tensor([float(len(c.text)) for c in conditions])
        return rows, torch.zeros_like(rows)


def test_loaded_model_encodes_each_condition_once():
    adapter = CountingAdapter()
    model = LoadedModel(adapter, None, torch.device("cpu"))
    a, b, c = (Condition(i, text=t) for i, t in (("a", "x"), ("b", "yy"), ("c", "zzz")))
    cond = model.encode([a, b, a, b])
    assert cond.rows.tolist() == [1.0, 2.0, 1.0, 2.0] and adapter.seen == ["a", "b"]
    cond = model.encode([c, a])  # a new prompt list: only the new prompt is encoded
    assert cond.rows.tolist() == [3.0, 1.0] and adapter.seen == ["a", "b", "c"]
    model.encode([a], negative_prompt="blurry")  # another negative prompt: encoded again
    assert adapter.seen == ["a", "b", "c", "a"]
