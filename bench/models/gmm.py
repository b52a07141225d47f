"""Exact Gaussian-mixture oracle under a VP diffusion.

If the data are ``p_0 = sum_k w_k N(mu_k, Sigma_k)``, the data-scaled noisy marginal at level
``s`` is ``sum_k w_k N(mu_k, Sigma_k + s^2 I)``, so the ideal denoiser is, in closed form,
``D(x; s) = sum_k r_k(x) (mu_k + Sigma_k (Sigma_k + s^2 I)^{-1} (x - mu_k))`` with posterior
responsibilities ``r_k``. Everything is float64.

Ground truth of the probability-flow ODE ``dx/ds = (x - D(x; s)) / s`` (Karras et al. 2022,
eq. 4; equivalently Song et al. 2021's PF-ODE in VP time):

* one component: ``x(s_b) = mu + (Sigma + s_b^2)^{1/2} (Sigma + s_a^2)^{-1/2} (x(s_a) - mu)``,
  i.e. in VP terms ``x_0 = mu + Sigma^{1/2} C_T^{-1/2} (x_T - alpha_T mu)``;
* a mixture: an adaptive DOP853 solve per sample (rtol, atol <= 1e-9), cached by the caller.

Class-conditional oracle: ``cond = k`` (an int, or a per-sample LongTensor with -1 for
"unconditional") selects component k, whose exact denoiser is that component's posterior mean.
``guidance: {scale: w, cond: k}`` wraps the denoiser in classifier-free guidance
(``bench.guidance``); the ground truth is then the guided PF-ODE
``dx/ds = v_u + w (v_k - v_u)``. ``parameterisation: consistency`` turns the oracle into an
exact consistency model ``f(x, s) = ODE solution from s to consistency_sigma_min``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError
from bench.models.base import ModelAdapter
from bench.registry import MODELS
from bench.samplers.schedules import VPSchedule, make_schedule


def _as_array(value: Any, field: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BenchError(f"gmm: field '{field}' must be numbers, got {value!r}.") from None


def _check_types(*, shape: Any, var_min: Any, var_max: Any, mean_std: Any, seed: Any,
                 truth_rtol: Any, schedule: Any) -> None:
    """The scalar parameters' types and ranges, before NumPy meets them (a suite gives any
    YAML value: a string shape or seed would otherwise surface as a TypeError)."""
    from numbers import Integral, Real

    def real(v: Any) -> bool:
        return isinstance(v, Real) and not isinstance(v, bool) and bool(np.isfinite(v))

    def whole(v: Any) -> bool:
        return isinstance(v, Integral) and not isinstance(v, bool)

    if not isinstance(shape, (list, tuple)) or not all(whole(d) for d in shape):
        raise BenchError(f"gmm: field 'shape' must be a list of positive whole numbers (e.g. "
                         f"[1, 4, 4]), got {shape!r}.")
    for name, v in (("var_min", var_min), ("var_max", var_max)):
        if not real(v) or v <= 0:
            raise BenchError(f"gmm: field '{name}' must be a positive number, got {v!r}.")
    if not real(mean_std) or mean_std < 0:
        raise BenchError(f"gmm: field 'mean_std' must be a number >= 0, got {mean_std!r}.")
    if var_max < var_min:
        raise BenchError(f"gmm: field 'var_max' ({var_max!r}) is below var_min ({var_min!r}); "
                         f"give var_min <= var_max.")
    if not whole(seed) or seed < 0:
        raise BenchError(f"gmm: field 'seed' must be a whole number >= 0, got {seed!r}.")
    if not real(truth_rtol) or truth_rtol <= 0:
        raise BenchError(f"gmm: field 'truth_rtol' must be a positive number, got {truth_rtol!r}.")
    name = schedule if isinstance(schedule, str) else (
        schedule.get("name", "discrete") if isinstance(schedule, dict) else None)
    if name not in ("discrete", "linear"):
        raise BenchError(f"gmm: field 'schedule' is {schedule!r}; use 'discrete', 'linear' or "
                         f"{{name: discrete|linear, ...}}.")


@MODELS.register("gmm", "Exact Gaussian-mixture oracle (closed-form denoiser and ODE solution)")
class GMMOracle(ModelAdapter):
    """Gaussian mixture data under a VP process; the ideal denoiser in closed form.

    Give ``means``/``covs``/``weights`` explicitly (covs per component: a scalar, a diagonal
    of variances, or a full matrix) or let ``components``, ``cov`` (diag|full), ``var_min``,
    ``var_max``, ``mean_std`` and ``seed`` draw an anisotropic mixture.
    """

    is_oracle = True

    def __init__(self, *, shape: Sequence[int] = (2,), schedule: str | dict = "discrete",
                 components: int = 1, cov: str = "diag", var_min: float = 0.05,
                 var_max: float = 1.0, mean_std: float = 1.0, seed: int = 0,
                 weights: list | None = None, means: list | None = None, covs: list | None = None,
                 truth_rtol: float = 1e-10, parameterisation: str = "x0",
                 consistency_sigma_min: float = 0.0, guidance: dict | None = None) -> None:
        _check_types(shape=shape, var_min=var_min, var_max=var_max, mean_std=mean_std, seed=seed,
                     truth_rtol=truth_rtol, schedule=schedule)
        self.shape = tuple(int(d) for d in shape)
        if not self.shape or any(d <= 0 for d in self.shape):
            raise BenchError(f"gmm: field 'shape' must be positive sizes, got {list(shape)}.")
        dim = int(np.prod(self.shape, dtype=object))
        k = components if means is None else (len(means) if isinstance(means, (list, tuple)) else 1)
        full = cov == "full" if means is None else any(
            np.ndim(c) == 2 for c in (covs if isinstance(covs, (list, tuple)) else []))
        self._check_fits(k, self.shape, full, "components" if means is None else "means")
        self.schedule_spec = schedule
        try:
            self.schedule: VPSchedule = make_schedule(schedule)
        except (TypeError, ValueError) as exc:  # unknown or ill-typed schedule parameters
            raise BenchError(f"gmm: field 'schedule' = {schedule!r}: {exc}.") from None
        if truth_rtol > 1e-9:
            raise BenchError(f"gmm: field 'truth_rtol' is {truth_rtol}; ground truth needs <= 1e-9.")
        self.truth_rtol = float(truth_rtol)
        if means is None:
            if cov not in ("diag", "full"):
                raise BenchError(f"gmm: field 'cov' is {cov!r}; use 'diag' or 'full'.")
            rng = np.random.default_rng(seed)
            mu = rng.normal(0.0, mean_std, (components, dim))
            lam = np.exp(rng.uniform(np.log(var_min), np.log(var_max), (components, dim)))
            if cov == "full":
                q = np.stack([np.linalg.qr(rng.normal(size=(dim, dim)))[0] for _ in range(components)])
            else:
                q = None
        else:
            mu = _as_array(means, "means")
            mu = np.broadcast_to(mu.reshape(mu.shape[0], -1) if mu.ndim > 1 else mu[:, None],
                                 (mu.shape[0], dim)).copy()
            lam, q = self._eig(covs if covs is not None else [1.0] * len(mu), len(mu), dim)
        for name, arr in (("means", mu), ("covs", lam)):
            if not np.isfinite(arr).all() or (np.abs(arr) > 1e150).any():
                raise BenchError(f"gmm: field '{name}' has a value that is NaN, infinite or "
                                 f"beyond 1e150 in magnitude (squared, it overflows float64); "
                                 f"give finite values of a sane scale.")
        k = mu.shape[0]
        w = np.full(k, 1.0 / k) if weights is None else _as_array(weights, "weights")
        if w.shape != (k,) or not np.isfinite(w).all() or (w <= 0).any():
            raise BenchError(f"gmm: field 'weights' needs {k} positive numbers, got {weights!r}.")
        self.params = {"shape": list(self.shape), "schedule": schedule, "components": k}
        if parameterisation not in ("x0", "consistency"):
            raise BenchError(f"gmm: field 'parameterisation' is {parameterisation!r}; use 'x0' "
                             f"(denoiser) or 'consistency' (exact consistency function).")
        if consistency_sigma_min < 0:
            raise BenchError(f"gmm: field 'consistency_sigma_min' is {consistency_sigma_min}; "
                             f"use a value >= 0 (e.g. 0.002 as in Song et al. 2023).")
        self.parameterisation = parameterisation
        self.consistency_sigma_min = float(consistency_sigma_min)
        if parameterisation != "x0":
            self.params.update(parameterisation=parameterisation,
                               consistency_sigma_min=self.consistency_sigma_min)
        self.guidance = None if guidance is None else self._check_guidance(guidance, k)
        if self.guidance is not None:
            self.params["guidance"] = self.guidance
        self.w = torch.from_numpy(w / w.sum())
        self.mu = torch.from_numpy(mu)
        self.lam = torch.from_numpy(lam)
        self.U = None if q is None else torch.from_numpy(q)
        digest = hashlib.sha256()
        for a in (self.w, self.mu, self.lam) + (() if self.U is None else (self.U,)):
            digest.update(a.numpy().tobytes())
        self.weights_hash = digest.hexdigest()

    @staticmethod
    def _check_fits(k: Any, shape: tuple[int, ...], full: bool, field: str) -> None:
        """Refuse a mixture whose parameters would not fit in memory, before drawing them: means
        and variances (with their draws) take 3 k dim float64; full covariances k eigenvector
        matrices of dim x dim, held twice while they are stacked, and the QR workspace that
        draws one (2 more). The bound is this machine's RAM (the oracle is built when a suite is
        validated and in every job), or GMM_MAX_BYTES where it cannot be read."""
        from bench.budget import machine_ram_bytes, size

        dim = int(np.prod(shape, dtype=object))
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BenchError(f"gmm: field '{field}' must give at least one component, got {k!r}.")
        need = 8 * (3 * k * dim + ((2 * k + 2) * dim * dim if full else 0))
        ram = machine_ram_bytes()
        limit = ram or GMM_MAX_BYTES
        if need > limit:
            what = (f"{k} full {dim}x{dim} covariance(s)" if full else
                    f"{k} x {dim:,} means and variances")
            raise BenchError(f"gmm: field 'shape' = {list(shape)} gives {dim:,} "
                             f"dimensions: {what} need about {size(need)}, more than the "
                             f"{size(limit)} of {'this machine' if ram else 'GMM_MAX_BYTES'}. "
                             f"Use a smaller shape{' or cov: diag' if full else ''}, or fewer "
                             f"components.")

    @staticmethod
    def _eig(covs: Any, k: int, dim: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Per component a scalar, a diagonal (dim,) or a full (dim, dim) covariance."""
        if not isinstance(covs, (list, tuple, np.ndarray)) or len(covs) != k:
            raise BenchError(f"gmm: field 'covs' needs one entry per mean ({k}), got {covs!r}.")
        lams, qs = [], []
        for i, ci in enumerate(covs):
            c = _as_array(ci, f"covs[{i}]")
            if c.ndim <= 1 and c.size in (1, dim):
                lams.append(np.broadcast_to(c.reshape(-1), (dim,)).copy())
                qs.append(None)  # the identity, built below only if another one is full
            elif c.shape == (dim, dim):
                lam, q = np.linalg.eigh(c)
                lams.append(lam)
                qs.append(q)
            else:
                raise BenchError(f"gmm: field 'covs[{i}]' has shape {c.shape}; use a scalar, "
                                 f"{dim} variances or a {dim}x{dim} matrix.")
        lam = np.stack(lams)
        if (lam <= 0).any():
            raise BenchError("gmm: field 'covs' must be positive definite (all variances > 0).")
        full = any(np.asarray(c).ndim == 2 for c in covs)
        return lam, (np.stack([np.eye(dim) if q is None else q for q in qs]) if full else None)

    @staticmethod
    def _check_guidance(g: Any, k: int) -> dict[str, Any]:
        if not isinstance(g, dict) or set(g) - {"scale", "cond", "batched"} or "scale" not in g:
            raise BenchError(f"gmm: field 'guidance' is {g!r}; write 'guidance: {{scale: 2.0, "
                             f"cond: 0, batched: true}}' (cond = component index).")
        cond = g.get("cond", 0)
        if isinstance(cond, bool) or not isinstance(cond, int) or not 0 <= cond < k:
            raise BenchError(f"gmm: field 'guidance.cond' is {cond!r}; use a component index "
                             f"0..{k - 1}.")
        return {"scale": float(g["scale"]), "cond": cond, "batched": bool(g.get("batched", True))}

    # ------------------------------------------------------------------ adapter interface
    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    @property
    def truth_is_cheap(self) -> bool:
        """One component: closed form, nothing to cache."""
        return len(self.w) == 1

    def sample_shape(self) -> tuple[int, ...]:
        return self.shape

    def describe(self) -> dict[str, Any]:
        return {"type": "gmm", **self.params, "weights_hash": self.weights_hash}

    def load(self, device: torch.device | str = "cpu") -> Any:
        den = GMMDenoiser(self, torch.device(device))
        if self.guidance is None:
            return den
        from bench.guidance import GuidedDenoiser

        g = self.guidance
        return GuidedDenoiser(den, scale=g["scale"], cond=g["cond"], uncond=-1, batched=g["batched"])

    def sample_data(self, n: int, generator: torch.Generator | None = None,
                    cond: int | None = None) -> Tensor:
        """n float64 samples of the data distribution (of component ``cond`` if given)."""
        if cond is None:
            comp = torch.multinomial(self.w, n, replacement=True, generator=generator)
        else:
            comp = torch.full((n,), int(cond), dtype=torch.long)
        z = torch.randn((n, self.mu.shape[1]), generator=generator, dtype=torch.float64)
        z = z * self.lam[comp].sqrt()
        if self.U is not None:
            z = torch.einsum("nij,nj->ni", self.U[comp], z)
        return (self.mu[comp] + z).reshape(n, *self.shape)

    def log_density(self, x: Tensor, s: float | Tensor, cond: int | None = None) -> Tensor:
        """Closed-form float64 ``log p_s(x)`` per sample of the data-scaled noisy marginal
        ``sum_k w_k N(mu_k, Sigma_k + s^2 I)`` (``s = 0``: the data density; of component
        ``cond`` alone, weight 1, if given); ``s`` a float or a per-sample tensor."""
        if cond is not None and not 0 <= int(cond) < len(self.w):
            raise ValueError(f"gmm: cond={cond} is not a component index; use 0..{len(self.w) - 1}.")
        flat = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
        s = torch.as_tensor(s, dtype=torch.float64).to("cpu").reshape(-1).expand(flat.shape[0])
        logps = [logp if cond is None else logp - torch.log(self.w[k])
                 for k, logp, _, _ in _components(self, flat, s, cond)]
        out = torch.logsumexp(torch.stack(logps, 1), 1) - 0.5 * flat.shape[1] * np.log(2 * np.pi)
        return out.to(x.device)

    def decode(self, x0: Tensor) -> Tensor:
        return ((x0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    # --------------------------------------------------------------------- ground truth
    def ode_solution(self, x: Tensor, s_start: float, s_end: float) -> Tensor:
        flat = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
        g = self.guidance
        if len(self.w) == 1:
            out = self._closed_form(flat, s_start, s_end)
        elif g is not None and g["scale"] == 1.0:
            out = self._closed_form(flat, s_start, s_end, g["cond"])
        else:
            out = torch.stack([self._adaptive(row, s_start, s_end) for row in flat])
        return out.reshape(x.shape).to(x.device, x.dtype)

    def _closed_form(self, x: Tensor, s_a: float | Tensor, s_b: float, k: int = 0) -> Tensor:
        """Component k's flow map; ``s_a`` may be a per-row tensor."""
        mu, lam = self.mu[k], self.lam[k]
        s_a = torch.as_tensor(s_a, dtype=torch.float64)
        s_a = s_a[:, None] if s_a.ndim == 1 else s_a
        diff = x - mu
        z = diff if self.U is None else matmul_rows(diff, self.U[k])
        z = z * torch.sqrt((lam + s_b**2) / (lam + s_a**2))
        return mu + (z if self.U is None else matmul_rows(z, self.U[k].T))

    def _adaptive(self, row: Tensor, s_a: float, s_b: float) -> Tensor:
        from scipy.integrate import solve_ivp

        g = self.guidance

        def rhs(s: float, y: np.ndarray) -> np.ndarray:
            yy, ss = torch.from_numpy(y)[None], torch.tensor([s], dtype=torch.float64)
            v = velocity(self, yy, ss)
            if g is not None:  # classifier-free guided field v_u + w (v_k - v_u)
                v = v + g["scale"] * (velocity(self, yy, ss, g["cond"]) - v)
            return v[0].numpy()

        sol = solve_ivp(rhs, (s_a, s_b), row.numpy(), method="DOP853", rtol=self.truth_rtol,
                        atol=self.truth_rtol)
        if not sol.success:
            raise RuntimeError(f"ground-truth ODE solve failed: {sol.message}")
        return torch.from_numpy(sol.y[:, -1].copy())


BLOCK = 16
#: most memory a mixture's parameters may take where the machine's RAM cannot be read
GMM_MAX_BYTES = 64 * 2**30


def matmul_rows(x: Tensor, m: Tensor) -> Tensor:
    """``x @ m`` computed in fixed blocks of BLOCK rows (the last one zero-padded).

    BLAS picks kernels by the number of rows, so a plain ``x @ m`` gives a row last-bit
    different results for different batch sizes; fixed blocks make sample i's result
    independent of the batch it is in (checked in tests/test_determinism.py).
    """
    n = x.shape[0]
    pad = (-n) % BLOCK
    if pad:
        x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
    return torch.cat([x[i : i + BLOCK] @ m for i in range(0, x.shape[0], BLOCK)])[:n]


def _components(gmm: Any, x: Tensor, s: Tensor, only: int | None = None):
    """Per component: responsibilities' log-weights, whitened residual z/c and lam/c."""
    s2 = (s.to(torch.float64) ** 2)[:, None]
    for k in range(len(gmm.w)) if only is None else (only,):
        diff = x - gmm.mu[k]
        z = diff if gmm.U is None else matmul_rows(diff, gmm.U[k])
        c = gmm.lam[k] + s2
        logp = torch.log(gmm.w[k]) - 0.5 * (z * z / c + torch.log(c)).sum(1)
        yield k, logp, z, c


def _mix(gmm: Any, x: Tensor, s: Tensor, term, add_mean: bool = False,
         only: int | None = None) -> Tensor:
    """sum_k r_k (U_k term_k + [mu_k]), with term_k given in component k's eigenbasis
    (component ``only`` alone if given: the class-conditional quantity)."""
    logps, terms = [], []
    for k, logp, z, c in _components(gmm, x, s, only):
        logps.append(logp)
        t = term(z, c, gmm.lam[k])
        t = t if gmm.U is None else matmul_rows(t, gmm.U[k].T)
        terms.append(t + gmm.mu[k] if add_mean else t)
    if len(terms) == 1:
        return terms[0]
    r = torch.softmax(torch.stack(logps, 1), dim=1)
    out = r[:, 0:1] * terms[0]
    for k in range(1, len(terms)):
        out = out + r[:, k : k + 1] * terms[k]
    return out


def velocity(gmm: GMMOracle, x: Tensor, s: Tensor, only: int | None = None) -> Tensor:
    """PF-ODE velocity dx/ds = (x - D)/s = s * sum_k r_k (Sigma_k + s^2)^{-1} (x - mu_k)."""
    return s[:, None] * _mix(gmm, x, s, lambda z, c, lam: z / c, only=only)


class GMMDenoiser:
    """The oracle's exact x0-prediction, on flattened float64 batches."""

    def __init__(self, gmm: GMMOracle, device: torch.device) -> None:
        self.gmm, self.device = gmm, device
        self.schedule = gmm.schedule
        self.parameterisation = gmm.parameterisation
        self.consistency_sigma_min = gmm.consistency_sigma_min
        self.cache_key = f"gmm:{gmm.weights_hash}"
        for name in ("w", "mu", "lam", "U"):
            t = getattr(gmm, name)
            setattr(self, name, None if t is None else t.to(device))

    def sample_data(self, n: int, generator: torch.Generator | None = None,
                    cond: int | None = None) -> Tensor:
        """Data samples (float64, on this denoiser's device); see GMMOracle.sample_data."""
        return self.gmm.sample_data(n, generator, cond).to(self.device)

    def _denoise(self, flat: Tensor, sigma: Tensor, only: int | None) -> Tensor:
        if self.parameterisation == "consistency":
            return self._consistency(flat, sigma, only)
        return _mix(self, flat, sigma, lambda z, c, lam: lam / c * z, add_mean=True, only=only)

    def _consistency(self, flat: Tensor, sigma: Tensor, only: int | None) -> Tensor:
        """f(x, s): the exact PF-ODE flow from s to consistency_sigma_min (identity below it)."""
        eps = self.consistency_sigma_min
        s = torch.clamp(sigma.to(torch.float64), min=eps)
        if len(self.w) == 1 or only is not None:
            return self.gmm._closed_form(flat.cpu(), s.cpu(), eps, only or 0).to(flat)
        rows = [self.gmm._adaptive(r.cpu(), float(si), eps) if float(si) > eps else r.cpu()
                for r, si in zip(flat, s)]
        return torch.stack(rows).to(flat)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=flat.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(flat.shape[0])
        if cond is None or (isinstance(cond, int) and cond < 0):
            d = self._denoise(flat, sigma, None)
        elif isinstance(cond, int):
            d = self._denoise(flat, sigma, self._check_cond(cond))
        else:  # per-sample classes, -1 = unconditional
            c = torch.as_tensor(cond, device=flat.device).reshape(-1)
            if c.shape[0] != flat.shape[0]:
                raise ValueError(f"gmm: cond has {c.shape[0]} entries for a batch of {flat.shape[0]}")
            d = torch.empty_like(flat)
            for k in torch.unique(c).tolist():
                rows = (c == k).nonzero().reshape(-1)
                d[rows] = self._denoise(flat[rows], sigma[rows], None if k < 0 else self._check_cond(k))
        return d.reshape(x.shape).to(x.dtype)

    def _check_cond(self, k: int) -> int:
        if not 0 <= k < len(self.w):
            raise ValueError(f"gmm: cond={k} is not a component index; use 0..{len(self.w) - 1} "
                             f"or -1 (unconditional).")
        return int(k)
