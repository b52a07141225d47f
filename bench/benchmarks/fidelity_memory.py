"""Peak RSS of a fidelity run (FID + KID against a Fashion-MNIST test reference) at two sample
counts, each in a fresh process: streaming keeps features, never images, so 10k samples should
need little more memory than 1k (the target: within 1.5 GB).

    python -m bench.benchmarks.fidelity_memory [--sizes 1000 10000] [--ref-limit 1000] [--device cpu]

Prints one line per size and the difference. The reference is built first (in a temporary
refstats folder) so both runs only read it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def child(n: int, params: dict, device: str) -> None:
    from bench.benchmarks.fidelity_common import compute, stream

    t0 = time.perf_counter()
    vals = compute(stream(["fid", "kid"], params, n, device=device))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "peak_rss_mb": peak_mb, "wall_s": time.perf_counter() - t0,
                      "fid": vals["fid"][0], "kid": vals["kid"][0]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--ref-limit", type=int, default=1000)
    ap.add_argument("--resize", default="tf1_bilinear")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--params", default=None)
    a = ap.parse_args()
    if a.child is not None:
        child(a.child, json.loads(a.params), a.device)
        return
    with tempfile.TemporaryDirectory() as root:
        params = {"ref": "fmnist-test", "ref_limit": a.ref_limit, "refstats_dir": root,
                  "resize": a.resize, "batch_size": 100}
        from bench.data import open_dataset
        from bench.metrics import refstats
        from bench.metrics.fidelity_common import get_extractor

        refstats.build(open_dataset("fmnist-test"), get_extractor(params, a.device),
                       limit=a.ref_limit, root=root)
        rows = []
        for n in a.sizes:
            out = subprocess.run([sys.executable, "-m", "bench.benchmarks.fidelity_memory",
                                  "--child", str(n), "--params", json.dumps(params), "--device",
                                  a.device], capture_output=True, text=True, env=os.environ.copy())
            if out.returncode:
                sys.exit(out.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"n={r['n']:6d}: peak RSS {r['peak_rss_mb']:8.1f} MB, {r['wall_s']:.0f} s, "
                  f"FID {r['fid']:.3f}, KID {r['kid']:.5f}", flush=True)
        if len(rows) >= 2:
            d = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
            print(f"peak RSS difference n={rows[-1]['n']} vs n={rows[0]['n']}: {d:.1f} MB "
                  f"({'within' if d <= 1536 else 'over'} 1.5 GB)")


if __name__ == "__main__":
    main()
