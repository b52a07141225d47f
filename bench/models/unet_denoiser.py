"""A diffusers UNet as the harness's Denoiser ``D(x; s, cond) -> x0``, and the text side of
text-conditional models (prompt encoding as ``StableDiffusionPipeline.encode_prompt``,
precomputed embedding tables).

The scheduler config's betas define the discrete VP schedule (DDPM, Ho et al. 2020; t_n =
(n+1)/N as in DPM-Solver, Lu et al. 2022); a level ``s`` maps to the (possibly fractional)
training timestep by that schedule, the network sees ``x_t = alpha_s x``, and its output is
turned into x0 by its ``prediction_type``: ``epsilon`` (x0 = x - s eps), ``v_prediction``
(Salimans & Ho 2022: x0 = alpha x_t - sigma v) or ``sample``. Rows go through the network in
fixed blocks of ``block`` rows (the last one zero-padded), so a sample's value does not depend
on the batch size it was drawn in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.denoiser import Cond
from bench.errors import BenchError
from bench.samplers.schedules import DiscreteVP

def load_embeddings(path: str) -> Tensor:
    """A K x tokens x dim tensor of encoder hidden states from .pt, .npy or .safetensors."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"diffusers: field 'embeddings' = '{path}' is not a file; give a .pt, .npy "
                         f"or .safetensors holding a K x tokens x dim tensor.")
    if p.suffix == ".npy":
        import numpy as np

        t = torch.from_numpy(np.load(p))
    elif p.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(p))
        t = next(iter(tensors.values())) if len(tensors) == 1 else tensors.get("embeddings")
    else:
        t = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(t, Tensor) or t.ndim != 3:
        raise BenchError(f"diffusers: '{path}' must hold one K x tokens x dim tensor, got "
                         f"{getattr(t, 'shape', type(t).__name__)}.")
    return t.float()


def encode_prompts(tokenizer: Any, text_encoder: Any, prompts: list[str], device: torch.device) -> Tensor:
    """Text-encoder hidden states of each prompt (as StableDiffusionPipeline.encode_prompt)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        return text_encoder(ids)[0]



class UNetDenoiser:
    """D(x; s, cond) -> x0 for a diffusers UNet trained on a discrete VP schedule."""

    def __init__(self, unet: Any, schedule: DiscreteVP, prediction_type: str, device: torch.device,
                 dtype: torch.dtype, block: int, null: int | None, key: str) -> None:
        self.unet, self.schedule, self.prediction_type = unet, schedule, prediction_type
        self.device, self.dtype, self.block, self.null = device, dtype, block, null
        self.cache_key = key
        self.network_calls = 0

    def timesteps(self, s: Tensor) -> Tensor:
        """Training timestep (fractional between grid points) of data-scaled level s."""
        t = self.schedule.t_of_s(s.to(torch.float64)) * self.schedule.N - 1.0
        r = torch.round(t)
        return torch.where((t - r).abs() < 1e-3, r, t)  # float32 schedules: snap

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any | None = None) -> Tensor:
        self.network_calls += 1
        n = x.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(n)
        if isinstance(cond, Cond):
            cond = cond.rows
        if cond is None:
            c = None if self.null is None else torch.full((n,), self.null, dtype=torch.long)
        elif isinstance(cond, Tensor) and cond.is_floating_point():
            c = cond  # encoder hidden states, one row per sample
        else:
            c = torch.as_tensor(cond, dtype=torch.long).reshape(-1).to(x.device)
            c = c.expand(n) if c.numel() == 1 else c
        alpha = (1.0 + s * s).rsqrt()
        shape = (n,) + (1,) * (x.ndim - 1)
        a, sv = alpha.view(shape), (s * alpha).view(shape)
        xt = (x.to(torch.float64) * a)
        out = self._net(xt, self.timesteps(s), c).to(torch.float64)
        if self.prediction_type == "epsilon":
            x0 = x.to(torch.float64) - s.view(shape) * out
        elif self.prediction_type == "v_prediction":
            x0 = a * xt - sv * out
        else:
            x0 = out
        return x0.to(x.dtype)

    def _net(self, xt: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        """The network's output in batches of ``block``. Differentiable in ``xt`` (the weights
        are frozen by the adapter, so nothing is recorded unless ``xt`` requires grad): the
        ODE likelihood's divergence takes vector-Jacobian products through it."""
        n = xt.shape[0]
        block = self.block or n
        outs = []
        for b0 in range(0, n, block):
            sl = slice(b0, min(b0 + block, n))
            m = sl.stop - sl.start
            pad = block - m if self.block else 0
            xb, tb = xt[sl], t[sl]
            cb = None if c is None else c[sl]
            if pad:
                xb = torch.cat([xb, xb.new_zeros((pad,) + xb.shape[1:])])
                tb = torch.cat([tb, tb[-1:].expand(pad)])
                cb = None if cb is None else torch.cat([cb, cb[-1:].expand(pad, *cb.shape[1:])])
            kw: dict[str, Any] = {}
            if cb is not None and cb.is_floating_point():
                kw["encoder_hidden_states"] = cb.to(self.device, self.dtype)
            elif cb is not None:
                kw["class_labels"] = cb.to(self.device)
            out = self.unet(xb.to(self.device, self.dtype), tb.to(self.device, torch.float32),
                            **kw).sample
            outs.append(out[:m])
        return torch.cat(outs)
