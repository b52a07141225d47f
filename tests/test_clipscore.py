"""``clipscore`` (bench/metrics/clipscore.py), the CLIP loader (bench/clip.py) and ``bench
clipscore``, on tiny randomly initialised CLIPs saved to temporary folders (no downloads): a
transformers ``CLIPModel`` with a byte-level CLIP vocabulary, and an open_clip hub folder."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from bench.conditions import Condition
from bench.errors import BenchError
from bench.generate import Generation
from bench.metrics.base import MetricContext
from bench.metrics.clipscore import ClipScore, aggregate
from bench.tokenizer import bytes_to_unicode
from bench.clip import PooledFeatures

LONG = " ".join(["cat"] * 30)  # 3 tokens a word with this vocabulary: 92 tokens with start/end


def write_vocab(d) -> None:
    """A minimal CLIP byte-level BPE: the 256 byte symbols, the same with '</w>', two merges,
    then the start and end tokens (the end token has the largest id, as in CLIP)."""
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["th", "the</w>", "<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (d / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A transformers CLIPModel folder (config, safetensors, tokenizer, image processor)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    d = tmp_path_factory.mktemp("hfclip")
    write_vocab(d)
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=28, patch_size=7)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    with torch.no_grad():  # independent random projections: cosines of both signs
        model.visual_projection.weight.normal_()
        model.text_projection.weight.normal_()
    model.save_pretrained(d)
    ip = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def hf_legacy_dir(hf_dir, tmp_path_factory):
    """The same model with the legacy text config eos_token_id 2 (pooling at the argmax id)."""
    d = tmp_path_factory.mktemp("hfclip_legacy") / "m"
    shutil.copytree(hf_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["eos_token_id"] = 2
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def oc_dir(tmp_path_factory):
    """open_clip hub layout (as tests/test_fidelity_extractors.py builds it), with the vocabulary
    of open_clip's own tokenizer (49408) so that prompts can be encoded."""
    import open_clip

    d = tmp_path_factory.mktemp("occlip")
    cfg = {"model_cfg": {"embed_dim": 16,
                         "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                        "head_width": 16},
                         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16,
                                      "heads": 2, "layers": 1}},
           "preprocess_cfg": {"size": 32}}
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{d}", load_weights=False)
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d


PROMPTS = ["the cat", "a dog on the mat", "red", "the the the", "two birds", "x", "green tree",
           "a photo of the sea", "blue", "o", "zz top", "the end"]


def images(n: int, seed: int = 0, size: tuple[int, int] = (40, 36), channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, *size), generator=g, dtype=torch.uint8)


def gen_of(x: torch.Tensor, texts: list[str], start: int = 0, ids: list[str] | None = None,
           finite: np.ndarray | None = None) -> Generation:
    g = Generation.of_images(np.arange(start, start + len(x)), x)
    ids = ids or [f"p{t}" for t in texts]
    g.conditions = [Condition(id=i, text=t, category="long" if len(t) > 5 else "short")
                    for i, t in zip(ids, texts)]
    if finite is not None:
        g.finite = finite
    return g


def metric(folder, **params) -> ClipScore:
    return ClipScore(MetricContext(None, torch.device("cpu"), None, params={"clip": str(folder), **params}))


def fold(m: ClipScore, gens: list[Generation]) -> dict[str, np.ndarray]:
    """As the harness: update, state, reset per batch; states folded left to right."""
    acc = None
    for g in gens:
        m.update(g)
        s = m.state()
        m.reset()
        acc = s if acc is None else ClipScore.merge([acc, s])
    return acc


def tm_loader(folder):
    """torchmetrics accepts a local folder only through a callable (a string must name a known
    hub model): the callable loads the folder offline and returns (model, processor)."""
    from transformers import CLIPModel, CLIPProcessor

    def load():
        return (PooledFeatures(CLIPModel.from_pretrained(str(folder), local_files_only=True)),
                CLIPProcessor.from_pretrained(str(folder), local_files_only=True))

    return load


def tm_per_sample(folder, x, texts) -> np.ndarray:
    """torchmetrics' per-image 100 * cos (before its mean and clamp)."""
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    model, processor = tm_loader(folder)()
    score, _ = _clip_score_update(list(x), texts, model, processor)
    return score.detach().double().numpy()


def hf_reference(folder, x, ids_rows: list[list[int]], position: list[int] | None = None) -> np.ndarray:
    """100 * cos between image embeddings and the text embedding of explicit ids, pooled at the
    end token (default: the last id) or at ``position``."""
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    proc = CLIPImageProcessor.from_pretrained(str(folder))
    with torch.no_grad():
        img = model.get_image_features(pixel_values=proc(images=list(x), return_tensors="pt")
                                       ["pixel_values"]).pooler_output
        embs = []
        for k, row in enumerate(ids_rows):
            ids = torch.tensor([row])
            hidden = model.text_model(input_ids=ids).last_hidden_state[0]
            pos = len(row) - 1 if position is None else position[k]
            embs.append(model.text_projection(hidden[pos]))
        txt = torch.stack(embs)
    return 100 * torch.nn.functional.cosine_similarity(img.double(), txt.double()).numpy()


# ------------------------------------------------------------------------- parity
def test_parity_with_torchmetrics_clipscore(hf_dir):
    from torchmetrics.multimodal.clip_score import CLIPScore

    x, texts = images(12), PROMPTS
    ours = metric(hf_dir)  # convention torchmetrics
    state = fold(ours, [gen_of(x[:5], texts[:5]), gen_of(x[5:], texts[5:], start=5)])
    per = tm_per_sample(hf_dir, x, texts)
    np.testing.assert_allclose(state["clipscore"], per, atol=1e-4, rtol=0)
    assert np.ptp(per) > 10  # a real comparison: scores spread out, of both signs
    assert (per < 0).any() and (per > 0).any()
    tm = CLIPScore(model_name_or_path=tm_loader(hf_dir))
    for sel in (np.arange(12), np.flatnonzero(per > 0)):  # clamped to 0 / a positive mean
        tm.reset()
        tm.update(x[sel], [texts[i] for i in sel])
        sub = fold(metric(hf_dir), [gen_of(x[sel], [texts[i] for i in sel])])
        assert abs(ClipScore.compute(sub)["clipscore"][0] - float(tm.compute())) < 1e-4
    assert float(tm.compute()) > 1
    # equal images per prompt: the mean of per-prompt means is torchmetrics' mean over images
    x2, t2 = images(8, seed=3), [PROMPTS[i % 4] for i in range(8)]
    tm.reset()
    tm.update(x2, t2)
    s2 = fold(metric(hf_dir, convention="mlperf"), [gen_of(x2, t2)])  # no clamp
    unclamped = float(tm.score / tm.n_samples)
    assert abs(ClipScore.compute(s2)["clipscore"][0] - unclamped) < 1e-4
    assert abs(unclamped) > 1


def test_grayscale_is_repeated_to_rgb(hf_dir):
    x = images(3, seed=4, channels=1)
    a = fold(metric(hf_dir), [gen_of(x, PROMPTS[:3])])
    b = fold(metric(hf_dir), [gen_of(x.expand(-1, 3, -1, -1).contiguous(), PROMPTS[:3])])
    np.testing.assert_array_equal(a["clipscore"], b["clipscore"])


# ------------------------------------------------------------------------- long prompts
def test_long_prompt_error_truncate_and_torchmetrics_dropping_the_end_token(hf_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(hf_dir))
    ids = tok(LONG)["input_ids"]
    assert len(ids) == 92 and ids[-1] == tok.eos_token_id
    x = images(2, seed=5)
    texts = [LONG, LONG + " dog"]
    with pytest.raises(BenchError, match=r"has 92 tokens .* context length 77.*shorten it, or set "
                                         r"long_prompts: truncate"):
        fold(metric(hf_dir), [gen_of(x, texts)])
    ours = fold(metric(hf_dir, long_prompts="truncate"), [gen_of(x, texts)])["clipscore"]
    rows = [tok(t)["input_ids"] for t in texts]
    truncated = [[*r[:76], tok.eos_token_id] for r in rows]
    np.testing.assert_allclose(ours, hf_reference(hf_dir, x, truncated), atol=1e-4, rtol=0)
    with pytest.warns(UserWarning, match="longer than"):
        tm = tm_per_sample(hf_dir, x, texts)
    # torchmetrics cuts the ids at 77: no end token is left, transformers pools at the first
    # eos_token_id, found nowhere, i.e. at position 0 (the start token): the same embedding for
    # every long prompt, whatever it says
    at0 = hf_reference(hf_dir, x, [r[:77] for r in rows], position=[0, 0])
    np.testing.assert_allclose(tm, at0, atol=1e-4, rtol=0)
    assert np.all(np.abs(tm - ours) > 0.5), (tm, ours)
    same = x[:1].expand(2, -1, -1, -1).contiguous()  # one image, two long prompts that differ
    two = ["dog " + LONG, "red " + LONG]
    with pytest.warns(UserWarning, match="longer than"):
        tm2 = tm_per_sample(hf_dir, same, two)
    assert tm2[0] == tm2[1]  # torchmetrics: whatever the prompt says
    ours2 = fold(metric(hf_dir, long_prompts="truncate"), [gen_of(same, two)])["clipscore"]
    assert abs(ours2[0] - ours2[1]) > 0.1


def test_long_prompt_with_a_legacy_config_pools_at_the_start_token_too(hf_legacy_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(hf_legacy_dir))
    x = images(2, seed=6)
    texts = [LONG, "the " + LONG]
    rows = [tok(t)["input_ids"] for t in texts]
    with pytest.warns(UserWarning, match="longer than"):
        tm = tm_per_sample(hf_legacy_dir, x, texts)
    # legacy configs (eos_token_id 2, as OpenAI's hub configs) pool at the argmax of the ids; with
    # the end token cut off the largest id left is the start token's (second largest in CLIP's
    # vocabulary, as here): position 0 again, whatever the prompt says
    assert [int(np.argmax(r[:77])) for r in rows] == [0, 0]
    np.testing.assert_allclose(tm, hf_reference(hf_legacy_dir, x, [r[:77] for r in rows], [0, 0]),
                               atol=1e-4, rtol=0)
    ours = fold(metric(hf_legacy_dir, long_prompts="truncate"), [gen_of(x, texts)])["clipscore"]
    np.testing.assert_allclose(ours, hf_reference(hf_legacy_dir, x,
                                                  [[*r[:76], tok.eos_token_id] for r in rows]),
                               atol=1e-4, rtol=0)
    assert np.all(np.abs(ours - tm) > 0.5)


def test_config_and_tokenizer_disagreeing_on_the_end_token_is_refused(hf_dir, tmp_path):
    from bench.clip import load_clip

    d = tmp_path / "bad"
    shutil.copytree(hf_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["eos_token_id"] = 7
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BenchError, match="pools prompt 'red' at position 0, not at its end token"):
        load_clip(d, cache=False).encode_text(["red"])


# ------------------------------------------------------------------------- conventions
def test_hessel_convention_prefix_and_clamp_modes(hf_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(hf_dir))
    x, texts = images(12, seed=1), PROMPTS
    h = fold(metric(hf_dir, convention="hessel"), [gen_of(x, texts)])
    cos_prefixed = hf_reference(hf_dir, x, [tok("A photo depicts " + t)["input_ids"] for t in texts]) / 100
    np.testing.assert_allclose(h["cos"], cos_prefixed, atol=1e-6, rtol=0)
    np.testing.assert_allclose(h["clipscore"], 2.5 * np.maximum(cos_prefixed, 0), atol=1e-6, rtol=0)
    plain = fold(metric(hf_dir, convention="hessel", prefix=""), [gen_of(x, texts)])
    assert np.abs(plain["cos"] - h["cos"]).max() > 0.05  # the prefix is applied
    cos = h["cos"]
    assert (cos < 0).any() and (cos > 0).any()
    by = {c: fold(metric(hf_dir, scale=2.5, clamp=c), [gen_of(x, texts)])["clipscore"]
          for c in ("sample", "mean", "none")}
    np.testing.assert_array_equal(by["mean"], by["none"])  # 'mean' clamps only the aggregate
    differ = by["sample"] != by["none"]
    np.testing.assert_array_equal(differ, cos < 0)
    assert np.all(by["sample"][cos < 0] == 0)
    # the aggregate: clamp mean is max(mean, 0); sample is the mean of clamped values
    vals = {c: ClipScore.compute(fold(metric(hf_dir, scale=2.5, clamp=c), [gen_of(x, texts)]))
            ["clipscore"][0] for c in by}
    assert vals["mean"] == max(vals["none"], 0.0)
    assert vals["sample"] > vals["none"]
    desc = ClipScore.describe(h)
    assert desc["ref_id"] == ("clipscore scale=2.5 clamp=sample prefix='A photo depicts ' "
                              "long_prompts=error (convention hessel)")
    assert "clamp=none" in ClipScore.describe(fold(metric(hf_dir, convention="mlperf"),
                                                   [gen_of(x[:2], texts[:2])]))["ref_id"]


def test_parameters_are_checked_before_any_work(hf_dir, tmp_path, monkeypatch):
    from bench.evals.nfe_curve import NFECurve

    monkeypatch.delenv("BENCH_CLIP_WEIGHTS", raising=False)
    ok = {"clip": str(hf_dir)}
    for bad, match in (({"convention": "openai"}, "convention"), ({"clamp": "max"}, "clamp"),
                       ({"scale": -1}, "scale"), ({"long_prompts": "cut"}, "long_prompts"),
                       ({"prefix": 3}, "prefix"), ({"batch_size": 0}, "batch_size"),
                       ({"weights": "x"}, "weights"),
                       ({"clip": str(tmp_path / "nope")}, "field 'clip': = '.*nope' .*does not exist"),
                       ({"clip": None}, "field 'clip': no CLIP weights.*transformers CLIPModel folder")):
        with pytest.raises(BenchError, match=match):
            ClipScore.check_params({**ok, **bad})
    ClipScore.check_params({**ok, "convention": "hessel", "scale": 100})
    with pytest.raises(BenchError, match="field 'metrics.clipscore.clamp'"):  # as a suite checks it
        NFECurve(metrics=[{"name": "clipscore", "params": {**ok, "clamp": "max"}}])


# ------------------------------------------------------------------------- aggregation
def test_mean_over_prompts_of_per_prompt_means_with_a_deterministic_bootstrap(hf_dir):
    x = images(9, seed=2)
    ids = ["a", "b", "b", "b", "c", "c", "d", "d", "d"]
    texts = [{"a": "red", "b": "the cat", "c": "blue", "d": "two birds"}[i] for i in ids]
    state = fold(metric(hf_dir, convention="mlperf"), [gen_of(x, texts, ids=ids)])
    s = state["clipscore"]
    means = [s[[i for i, p in enumerate(ids) if p == k]].mean() for k in "abcd"]
    value, lo, hi = ClipScore.compute(state)["clipscore"]
    assert value == pytest.approx(np.mean(means), abs=1e-12)
    assert abs(value - s.mean()) > 1e-3  # not the mean over images
    assert lo <= value <= hi and lo < hi
    assert ClipScore.compute(state)["clipscore"] == (value, lo, hi)  # deterministic
    again = fold(metric(hf_dir, convention="mlperf"), [gen_of(x, texts, ids=ids)])
    assert ClipScore.compute(again)["clipscore"] == (value, lo, hi)
    # the interval is the percentile bootstrap over prompts with default_rng(0), 1000 resamples
    m = np.array(means)
    boot = m[np.random.default_rng(0).integers(0, 4, size=(1000, 4))].mean(1)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])), abs=1e-12)
    one = aggregate(np.array([1.0, 3.0]), np.array(["a", "a"]), "none")
    assert one[0] == 2.0 and np.isnan(one[1])  # one prompt: no interval
    neg = aggregate(np.array([-1.0, -3.0, 0.5]), np.array(["a", "b", "c"]), "mean")
    assert neg[0] == 0.0 and neg[1] == 0.0 and neg[2] >= 0.0  # clamp mean: max(., 0)


def test_nonfinite_samples_are_left_out_and_counted(hf_dir):
    x = images(4, seed=8)
    fin = np.array([True, False, True, True])
    state = fold(metric(hf_dir), [gen_of(x, PROMPTS[:4], finite=fin)])
    assert np.isnan(state["clipscore"][1]) and np.isfinite(state["clipscore"][[0, 2, 3]]).all()
    assert ClipScore.describe(state)["n_nonfinite"] == 1
    ref = fold(metric(hf_dir), [gen_of(x[[0, 2, 3]], [PROMPTS[i] for i in (0, 2, 3)])])
    np.testing.assert_array_equal(state["clipscore"][[0, 2, 3]], ref["clipscore"])


# ------------------------------------------------------------------------- invariance
@pytest.mark.parametrize("folder", ["hf_dir", "oc_dir"])
def test_batch_size_and_shard_split_invariance_bitwise(folder, request):
    d = request.getfixturevalue(folder)
    x = images(10, seed=9)
    four = ["the cat", "a photo of the sea at night with two birds", "red", "x"]  # two lengths
    texts = [four[i % 4] for i in range(10)]  # batches with and without the long one

    def run(batches: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        return fold(metric(d, batch_size=4), [gen_of(x[a:b], texts[a:b], start=a) for a, b in batches])

    whole = run([(0, 10)])
    for batches in ([(i, i + 1) for i in range(10)], [(0, 3), (3, 6), (6, 9), (9, 10)],
                    [(0, 7), (7, 10)]):
        s = run(batches)
        for k in whole:
            np.testing.assert_array_equal(s[k], whole[k])
    # shards computed apart and merged in any order, left fold or all at once
    a, b = run([(0, 6)]), run([(6, 8), (8, 10)])
    for merged in (ClipScore.merge([a, b]), ClipScore.merge([b, a])):
        for k in whole:
            np.testing.assert_array_equal(merged[k], whole[k])
    parts = [run([(i, i + 2)]) for i in range(0, 10, 2)]
    left = ClipScore.merge([ClipScore.merge(parts[:3]), *parts[3:]])
    for k in whole:
        np.testing.assert_array_equal(left[k], ClipScore.merge(parts)[k])
    assert ClipScore.compute(left) == ClipScore.compute(whole)
    # another number of rows per CLIP call: the same up to float rounding
    other = fold(metric(d, batch_size=7), [gen_of(x, texts)])
    np.testing.assert_allclose(other["clipscore"], whole["clipscore"], atol=1e-4, rtol=0)


def test_shards_with_other_weights_or_conventions_do_not_merge(hf_dir, oc_dir):
    x = images(2, seed=1)
    a = fold(metric(hf_dir), [gen_of(x, PROMPTS[:2])])
    b = fold(metric(hf_dir, convention="hessel"), [gen_of(x, PROMPTS[:2], start=2)])
    c = fold(metric(oc_dir), [gen_of(x, PROMPTS[:2], start=2)])
    for other in (b, c):
        with pytest.raises(ValueError, match="different CLIP weights or conventions"):
            ClipScore.merge([a, other])


# ------------------------------------------------------------------------- open_clip
def test_open_clip_model_through_the_same_metric(oc_dir):
    import open_clip
    from PIL import Image

    x, texts = images(6, seed=3), PROMPTS[:6]
    state = fold(metric(oc_dir), [gen_of(x, texts)])
    model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{oc_dir}")
    model.load_state_dict(torch.load(oc_dir / "open_clip_pytorch_model.bin"))
    tok = open_clip.get_tokenizer(f"local-dir:{oc_dir}")
    with torch.no_grad():
        img = model.eval().encode_image(torch.stack([pre(Image.fromarray(a.permute(1, 2, 0).numpy()))
                                                     for a in x]))
        txt = model.encode_text(tok(texts))
    ref = 100 * torch.nn.functional.cosine_similarity(img.double(), txt.double()).numpy()
    np.testing.assert_allclose(state["clipscore"], ref, atol=1e-4, rtol=0)
    desc = ClipScore.describe(state)
    assert desc["feature_extractor"] == "clip:open_clip" and desc["resize"] == "open_clip"
    assert desc["weights_sha256"] == hashlib.sha256(
        (oc_dir / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    # long prompts: open_clip's tokenizer keeps the first 76 tokens and puts the end token last,
    # which is what truncate does; error refuses
    long = " ".join(["word"] * 90)
    ids = tok([long])[0]
    assert int(ids[-1]) == tok.eot_token_id and int(ids.argmax()) == 76
    with pytest.raises(BenchError, match="has 92 tokens"):
        fold(metric(oc_dir), [gen_of(x[:1], [long])])
    ours = fold(metric(oc_dir, long_prompts="truncate"), [gen_of(x[:1], [long])])
    with torch.no_grad():
        t = model.encode_text(tok([long]))
    expect = 100 * torch.nn.functional.cosine_similarity(img[:1].double(), t.double()).numpy()
    np.testing.assert_allclose(ours["clipscore"], expect, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------- errors
def test_images_without_prompts_are_refused_before_work(hf_dir, tmp_path):
    from bench.models.gmm import GMMOracle

    adapter = GMMOracle(shape=[1, 8, 8], components=2, cov="diag")
    with pytest.raises(BenchError, match="takes no conditions, not prompts. Fix: .*conditions: "
                                         "\\{prompts"):  # before the (missing) weights are looked at
        ClipScore(MetricContext(adapter, torch.device("cpu"), None,
                                params={"clip": str(tmp_path / "nope")}))
    m = metric(hf_dir)
    x = images(2)
    g = Generation.of_images(np.arange(2), x)
    with pytest.raises(BenchError, match="have no conditions. Fix: .*bench clipscore"):
        m.update(g)
    g.conditions = [Condition(id="class=3", label=3, text="Dress", category="Dress")] * 2
    with pytest.raises(BenchError, match="have class conditions"):
        m.update(g)


def test_missing_weights_name_every_way(monkeypatch, tmp_path):
    from bench.clip import load_clip

    monkeypatch.delenv("BENCH_CLIP_WEIGHTS", raising=False)
    with pytest.raises(BenchError) as e:
        ClipScore(MetricContext(None, torch.device("cpu"), None, params={}))
    msg = str(e.value)
    for part in ("no clip weights given (no 'clip' parameter", "transformers CLIPModel folder",
                 "open_clip checkpoint", "--clip", "$BENCH_CLIP_WEIGHTS", "nothing is downloaded"):
        assert part in msg, part
    with pytest.raises(BenchError, match="'clip' parameter.*do not exist"):
        load_clip(tmp_path / "nope")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(BenchError, match="of type 'dinov2', not a CLIPModel"):
        load_clip(tmp_path / "cfg")


# ------------------------------------------------------------------------- the feature extractor
def test_clip_feature_extractor_loads_a_transformers_folder(hf_dir, oc_dir):
    from transformers import CLIPImageProcessor, CLIPModel

    from bench.metrics.features import make_extractor

    ext = make_extractor("clip", weights=str(hf_dir), batch_size=3)
    x = images(5, seed=4, size=(20, 20))
    f = ext(x)["pool"]
    model = CLIPModel.from_pretrained(str(hf_dir)).eval()
    px = CLIPImageProcessor.from_pretrained(str(hf_dir))(images=list(x), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=px).pooler_output
    torch.testing.assert_close(f, ref, rtol=1e-5, atol=1e-5)
    d = ext.describe()
    assert d["clip_kind"] == "transformers" and d["resize"] == "transformers" and d["dim"] == 16
    assert d["weights_sha256"] == hashlib.sha256((hf_dir / "model.safetensors").read_bytes()).hexdigest()
    assert d["preprocess"]["crop_size"] == {"height": 28, "width": 28}
    oc = make_extractor("clip", weights=str(oc_dir)).describe()
    assert oc["clip_kind"] == "open_clip" and oc["resize"] == "open_clip"
    assert ext.key() != make_extractor("clip", weights=str(oc_dir)).key()
    gray = ext(images(2, seed=1, channels=1))["pool"]
    torch.testing.assert_close(gray, ext(images(2, seed=1, channels=1).expand(-1, 3, -1, -1))["pool"])


# ------------------------------------------------------------------------- rows of a suite
def test_rows_fit_the_store_schema_with_per_prompt_and_category_slices(hf_dir):
    from bench.evals.nfe_curve import NFECurve
    from bench.evals.sampled import RECORD, SampleRecord, flatten
    from bench.conditions import Conditions
    from bench.store import rows_table

    ev = NFECurve(metrics=[{"name": "clipscore", "params": {"clip": str(hf_dir)}}],
                  slices=["condition", "category"])
    x, texts = images(6, seed=2), [PROMPTS[i % 3] for i in range(6)]
    g = gen_of(x, texts)
    conds = Conditions("prompts", tuple(dict.fromkeys(g.conditions)))
    rec = SampleRecord(conds)
    rec.update(g)
    m = ev.make_metrics(type("L", (), {"adapter": None, "device": torch.device("cpu")})(), None)
    m["clipscore"].update(g)
    meta = {"nfe_counted": 1, "network_calls": 1, "n_samples": 6, "wall_s": 1.0, "sample_s": 0.0,
            "model_s": 0.0, "load_s": 0.0, "metric_s": 0.0, "device": "cpu", "sigma_start": 1.0,
            "sigma_end": 0.0}
    shard = type("S", (), {"conditions": conds, "sampler": {"name": "ddim"}})()
    rows, table = ev.finalize([shard], [(flatten({"clipscore": m["clipscore"].state(),
                                                  RECORD: rec.state()}), meta)])
    rows_table(rows)  # every column is in ROW_SCHEMA
    slices = sorted(r["slice"] for r in rows)
    assert "all" in slices and "prompt=pred" in slices and "category=short" in slices
    top = next(r for r in rows if r["slice"] == "all")
    assert top["feature_extractor"] == "clip:transformers" and top["ref_id"].startswith("clipscore scale=100")
    assert "clipscore" in table and np.isfinite(table["clipscore"]).all()


# ------------------------------------------------------------------------- the CLI
@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    x = images(5, seed=7, size=(24, 24))
    for i in range(5):
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    return d, x


def write_prompts(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_json_per_image_scores_aggregate_and_interval(cli, hf_dir, folder, tmp_path):
    d, x = folder
    texts = ["the cat", "a dog", "the cat", "red", "a dog"]
    p = write_prompts(tmp_path / "p.csv", ["image,prompt"] + [f"{i}.png,{t}" for i, t in enumerate(texts)])
    code, out, err = cli("clipscore", d, p, "--clip", hf_dir, "--json", "--batch-size", "2")
    assert code == 0, err
    r = json.loads(out)
    assert [e["image"] for e in r["per_image"]] == [f"{i}.png" for i in range(5)]
    assert r["n_images"] == 5 and r["n_prompts"] == 3
    ids = [f"p{t}" for t in texts]
    ref = fold(metric(hf_dir, batch_size=2), [gen_of(x, texts, ids=ids)])  # the same rows per call
    np.testing.assert_array_equal([e["clipscore"] for e in r["per_image"]], ref["clipscore"])
    v = r["clipscore"]
    assert (v["value"], v["ci_low"], v["ci_high"]) == ClipScore.compute(ref)["clipscore"]
    assert v["ci_low"] <= v["value"] <= v["ci_high"]
    assert r["conventions"] == {"convention": "torchmetrics", "scale": 100.0, "clamp": "mean",
                                "prefix": "", "long_prompts": "error"}
    assert r["clip"]["weights_sha256"] == hashlib.sha256((hf_dir / "model.safetensors").read_bytes()).hexdigest()
    code, out, err = cli("clipscore", d, p, "--clip", hf_dir, "--convention", "hessel", "--scale", "1")
    assert code == 0, err
    assert out.startswith("CLIPSCORE") and "95% CI [" in out
    assert "scale=1 clamp=sample prefix='A photo depicts '" in out and "weights sha256" in out
    tsv = tmp_path / "p.tsv"
    tsv.write_text("image\tprompt\n" + "".join(f"{i}.png\t{t}\n" for i, t in enumerate(texts)))
    code, out2, err = cli("clipscore", d, tsv, "--clip", hf_dir, "--json", "--batch-size", "2")
    assert code == 0, err
    assert json.loads(out2)["clipscore"] == r["clipscore"]


@pytest.mark.parametrize("case", ["empty_line", "empty_prompt", "no_prompt_column", "no_image_column",
                                  "missing_image", "unlisted_image", "sizes", "long", "weights"])
def test_cli_errors_name_field_value_and_fix_before_scoring(case, cli, hf_dir, folder, tmp_path,
                                                            monkeypatch):
    from PIL import Image

    d, _ = folder
    rows = ["image,prompt"] + [f"{i}.png,prompt {i}" for i in range(5)]
    clip = hf_dir if case in ("long", "weights") else tmp_path / "no-weights"  # checks come first
    expect = {"empty_line": "line 3: empty line. Fix: remove it",
              "empty_prompt": "line 2: empty 'prompt' for image '0.png'. Fix:",
              "no_prompt_column": "no 'prompt' column .*Fix: name the columns",
              "no_image_column": "no 'image' column",
              "missing_image": "line 7: image '9.png' does not exist in IMAGE_DIR .*Fix:",
              "unlisted_image": "holds 1 image\\(s\\) without a prompt row .*: 4.png. Fix: add a row",
              "sizes": "images differ in size: '0.png' is 24x24, '3.png' is 30x24 .*Fix: resize",
              "long": "prompt 'cat cat .*' has 92 tokens .*--long-prompts truncate",
              "weights": "no clip weights given .*--clip"}[case]
    if case == "empty_line":
        rows.insert(2, "")
    elif case == "empty_prompt":
        rows[1] = "0.png,  "
    elif case == "no_prompt_column":
        rows[0] = "image,caption"
    elif case == "no_image_column":
        rows[0] = "file,prompt"
    elif case == "missing_image":
        rows.append("9.png,a dog")
    elif case == "unlisted_image":
        rows.pop()
    elif case == "sizes":
        Image.new("RGB", (30, 24)).save(d / "3.png")
    elif case == "long":
        rows[2] = f"1.png,{LONG}"
    elif case == "weights":
        monkeypatch.delenv("BENCH_CLIP_WEIGHTS", raising=False)
    p = write_prompts(tmp_path / "p.csv", rows)
    args = ["clipscore", d, p] + ([] if case == "weights" else ["--clip", clip])
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    import re

    assert re.search(expect, err), err


def test_cli_flag_errors_name_the_flag(cli, hf_dir, folder, tmp_path):
    d, _ = folder
    p = write_prompts(tmp_path / "p.csv", ["image,prompt"] + [f"{i}.png,x" for i in range(5)])
    code, _, err = cli("clipscore", d, p, "--clip", hf_dir, "--scale", "-2")
    assert code == 2 and "--scale: = -2.0." in err and "Fix: use a positive number" in err
    code, _, err = cli("clipscore", d, p, "--clip", hf_dir, "--clamp", "max")
    assert code == 2 and "--clamp" in err
