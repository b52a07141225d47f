"""Queries per second of the ``robustness`` eval and where the time goes: generation (the
sampler's network passes), CLIP (image embeddings and the objectives, permutation test
included), and the rest (search, decoding, checkpointing, model and CLIP loading), measured on
one cell run through ``bench run`` (debug executor, one process).

    python -m bench.benchmarks.robustness_throughput [--model fmnist-t2i] [--guidance 4]
        [--prompts 3] [--images 16] [--queries 10] [--nfe 10] [--sampler ddim]
        [--clip fmnist-clip] [--rules typo,glyph,phonetic] [--searches greedy,greedy-text,random]

The prompts are the first ``--prompts`` of each category of suites/prompts/fmnist-t2i-eval.csv
(one per category, in file order, until there are enough). A query is one generated set of
``--images`` images; greedy's importance ablations are shared by its rules (generated once,
charged to each attack's budget), so unique queries <= attacks x queries.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "suites" / "prompts" / "fmnist-t2i-eval.csv"


def pick_prompts(n: int) -> list[dict[str, str]]:
    rows = list(csv.DictReader(PROMPTS.open()))
    by_cat: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    out: list[dict[str, str]] = []
    depth = 0
    while len(out) < n:
        for cat in by_cat.values():
            if depth < len(cat) and len(out) < n:
                out.append(cat[depth])
        depth += 1
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fmnist-t2i")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--clip", default="fmnist-clip")
    ap.add_argument("--rules", default="typo,glyph,phonetic")
    ap.add_argument("--searches", default="greedy,greedy-text,random")
    a = ap.parse_args(argv)

    import pandas as pd

    from bench.cli import main as bench_main
    from bench.store import read_samples

    prompts = pick_prompts(a.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pfile = tmp_path / "prompts.csv"
        with pfile.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "prompt", "category"])
            w.writeheader()
            for p in prompts:
                w.writerow({k: p[k] for k in ("id", "prompt", "category")})
        suite = {"name": "robustness-bench", "seed": 0, "samples": len(prompts),
                 "batch_size": a.images, "nfe": [a.nfe], "nfe_rounding": "down",
                 "conditions": {"prompts": str(pfile)},
                 "models": [{"name": a.model, "params": {"guidance": {"scale": a.guidance}}}],
                 "samplers": [a.sampler],
                 "evals": [{"name": "robustness", "params": {
                     "rules": a.rules.split(","), "searches": a.searches.split(","),
                     "images": a.images, "queries": a.queries, "clip": a.clip, "gallery": 0}}]}
        spath = tmp_path / "suite.yaml"
        spath.write_text(yaml.safe_dump(suite))
        code = bench_main(["run", str(spath), "--results", str(tmp_path / "r"), "--executor", "debug"])
        if code != 0:
            raise SystemExit(f"bench run failed with exit code {code}")
        rows = pd.read_parquet(tmp_path / "r")
        table = read_samples(tmp_path / "r", "robustness-bench")
    r = rows.iloc[0]
    steps = table[table["phase"] != "result"]
    unique = len(steps.drop_duplicates(["cond_id", "candidate"]))
    charged = len(steps)
    wall, gen, clip = float(r["wall_s"]), float(r["sample_s"]), float(r["metric_s"])
    other = wall - gen - clip
    print(f"model {a.model} (guidance {a.guidance:g}), {a.sampler} NFE {a.nfe}, {len(prompts)} "
          f"prompts x {len(a.rules.split(','))} rules x {len(a.searches.split(','))} searches, "
          f"{a.images} images per query, <= {a.queries} queries per attack")
    print(f"queries: {unique} generated (+{len(prompts)} original sets), {charged} charged to "
          f"attacks; network passes {int(r['network_calls'])}")
    print(f"wall {wall:.1f} s: {unique / wall:.2f} generated queries/s, "
          f"{charged / wall:.2f} charged queries/s, "
          f"{(unique + len(prompts)) * a.images / wall:.1f} images/s overall")
    for name, t in (("generation (sampler)", gen), ("CLIP + objectives", clip),
                    ("other (decode, search, load, checkpoints)", other)):
        print(f"  {name:42s} {t:8.1f} s  {100 * t / wall:5.1f}%")
    rate = rows[(rows["metric"] == "attack_success_rate") & rows["slice"].str.startswith("search=")
                & (~rows["slice"].str.contains(",within=") | rows["slice"].str.endswith(",within=1"))]
    for _, s in rate.iterrows():
        print(f"  success rate {s['slice']}: {s['value']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")


if __name__ == "__main__":
    main()
