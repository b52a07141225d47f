"""Images/s through the harness's FID path vs torch-fidelity's own ``calculate_metrics`` on the
same images, same weights, same TF1 preprocessing, measured side by side (alternating, best of
``--repeats``) in one process.

    python -m bench.benchmarks.fidelity_throughput [--n 200] [--repeats 2] [--device cpu]

Both compute FID between n Fashion-MNIST training and n test images from scratch (no cache):
torch-fidelity from uint8 tensors; the harness streams the training images through the
``fid`` metric (decode -> features -> float64 sums) and builds the test reference in a fresh
refstats folder. Prints both rates and their ratio (target: harness >= 0.95x).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def run_torch_fidelity(gen: torch.Tensor, ref: torch.Tensor, weights: str, device: str) -> float:
    import torch_fidelity

    class DS(torch.utils.data.Dataset):
        def __init__(self, x: torch.Tensor) -> None:
            self.x = x.expand(-1, 3, -1, -1).contiguous()

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.x[i]

    r = torch_fidelity.calculate_metrics(input1=DS(gen), input2=DS(ref), fid=True, cache=False,
                                         verbose=False, cuda=device != "cpu", batch_size=100,
                                         feature_extractor="inception-v3-compat",
                                         feature_extractor_weights_path=weights)
    return float(r["frechet_inception_distance"])


def run_harness(n: int, weights: str, device: str) -> float:
    from bench.benchmarks.fidelity_common import compute, stream

    with tempfile.TemporaryDirectory() as root:
        params = {"ref": "fmnist-test", "ref_limit": n, "refstats_dir": root, "weights": weights,
                  "resize": "tf1_bilinear", "batch_size": 100}
        return compute(stream(["fid"], params, n, batch_size=100, device=device))["fid"][0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from pathlib import Path

    from bench.data import open_dataset
    from bench.metrics.inception_weights import export_state_dict, resolve_inception_weights

    w = resolve_inception_weights()
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(export_state_dict(w, Path(tmp) / "w.pth"))  # same tensors, torch-fidelity format
        gen = torch.from_numpy(np.array(open_dataset("fmnist-train").images(0, a.n)))
        ref = torch.from_numpy(np.array(open_dataset("fmnist-test").images(0, a.n)))
        run_harness(8, weights, a.device)  # warm up both (weights load, allocator)
        run_torch_fidelity(gen[:8], ref[:8], weights, a.device)
        best = {"torch-fidelity": float("inf"), "harness": float("inf")}
        fids = {}
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fids["torch-fidelity"] = run_torch_fidelity(gen, ref, weights, a.device)
            best["torch-fidelity"] = min(best["torch-fidelity"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            fids["harness"] = run_harness(a.n, weights, a.device)
            best["harness"] = min(best["harness"], time.perf_counter() - t0)
    rate = {k: 2 * a.n / v for k, v in best.items()}
    for k in best:
        print(f"{k:15s} {rate[k]:7.2f} images/s ({2 * a.n} images in {best[k]:.1f} s), FID {fids[k]:.4f}")
    print(f"harness / torch-fidelity throughput: {rate['harness'] / rate['torch-fidelity']:.3f}x "
          f"(weights sha256 {w.sha256[:12]}, device {a.device})")


if __name__ == "__main__":
    main()
