"""Model adapters: turn a model description into a Denoiser a sampler can call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import Tensor

from bench.conditions import Condition
from bench.denoiser import Denoiser


class ModelAdapter(ABC):
    """Loads a model and exposes the Denoiser contract, its sample shape and a decoder."""

    #: True for models whose probability-flow ODE solution is known (see ``ode_solution``).
    is_oracle: bool = False
    #: what the model is conditioned on: None, "classes" or "prompts" (see ``bench.conditions``)
    conditioning: str | None = None

    @abstractmethod
    def load(self, device: torch.device | str = "cpu") -> Denoiser: ...

    @abstractmethod
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (without the batch dimension)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able description, including a hash of the weights, recorded with results."""

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def produces_images(self) -> bool:
        return type(self).decode is not ModelAdapter.decode

    def label(self) -> str:
        """How error messages name the model."""
        return f"'{type(self).__name__}'"

    def class_labels(self, spec: Any) -> list[int]:
        """The class labels of ``conditions: {classes: spec}`` (class-conditional models)."""
        raise NotImplementedError(f"{type(self).__name__} is not class-conditional")

    def class_names(self) -> dict[int, str] | None:
        return None

    def encode(self, conditions: Sequence[Condition], negative_prompt: str = ""
               ) -> tuple[Tensor, Tensor | None]:
        """(rows, null rows) the network takes for these conditions (conditional models)."""
        raise NotImplementedError(f"{type(self).__name__} is not conditional")

    def decode(self, x0: Tensor) -> Tensor:
        """Samples in data space -> uint8 NCHW images in [0, 255]."""
        raise NotImplementedError(f"{type(self).__name__} does not produce images")

    def encode_images(self, images: Tensor) -> Tensor:
        """uint8 NCHW images -> samples in the model's data space, ``x / 127.5 - 1`` in [-1, 1]
        (as ``bench.train`` maps its training data; the inverse of ``decode`` up to rounding),
        in the model's dtype. Latent models override it (their data space is the VAE's)."""
        want = tuple(self.sample_shape())
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != want:
            raise ValueError(f"{type(self).__name__}.encode_images: expected uint8 images of "
                             f"shape [N, {', '.join(map(str, want))}], got {images.dtype} "
                             f"{list(images.shape)}")
        return (images.to(torch.float64) / 127.5 - 1.0).to(self.dtype)

    def ode_solution(self, x: Tensor, s_start: float, s_end: float) -> Tensor:
        """Exact probability-flow ODE solution from noise level s_start to s_end (oracles only)."""
        raise NotImplementedError(f"{type(self).__name__} is not an oracle model")
