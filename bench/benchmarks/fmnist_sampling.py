"""Load a shipped model through the ``diffusers`` adapter and draw 16 images with DDIM-50.

    python -m bench.benchmarks.fmnist_sampling [--model fmnist-cond] [--repeats 3]

Runs in a fresh process per repeat (so nothing is cached between them) and prints, per repeat,
the time to import the harness, to read the folder and load the weights (``MODELS.get(name)()``
then ``adapter.load()``), to sample 16 images with DDIM at 50 NFE (balanced class labels), and
the total of load + sampling, against the target of 10 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from bench.registry import load_all
load_all()
from bench.conditions import resolve
from bench.generate import LoadedModel, SamplerSpec, generate
from bench.samplers import sampler_info
t1 = time.perf_counter()
model = LoadedModel.load({"name": sys.argv[1], "params": {}}, torch.device("cpu"))
t2 = time.perf_counter()
idx = list(range(16))
conds = resolve(None, model.adapter).for_indices(idx)
gen = generate(model, SamplerSpec("ddim", {}, dict(sampler_info("ddim").grid), 50), idx, 0, conds,
               decode=True)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "sample_s": t3 - t2, "nfe": gen.nfe,
                  "images": list(gen.images.shape), "threads": torch.get_num_threads()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="fmnist-cond")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{args.model}: load + 16 samples with DDIM at 50 NFE, fresh process each (target < 10 s)")
    totals = []
    for r in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", CHILD, args.model], capture_output=True,
                             text=True, check=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
        total = m["load_s"] + m["sample_s"]
        totals.append(total)
        print(f"  repeat {r}: import {m['import_s']:.2f} s, load {m['load_s']:.2f} s, sample "
              f"{m['sample_s']:.2f} s (NFE {m['nfe']}, images {m['images']}, {m['threads']} "
              f"threads); load + sample {total:.2f} s; with import {total + m['import_s']:.2f} s")
    best, worst = min(totals), max(totals)
    print(f"load + sample: best {best:.2f} s, worst {worst:.2f} s -> "
          f"{'meets' if worst < 10 else 'MISSES'} the 10 s target")


if __name__ == "__main__":
    main()
