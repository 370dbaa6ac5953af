"""Plain PyTorch adapter: a module's trainable parameters <-> one flat update vector.

A hand-written federated loop needs four steps around any aggregator; this module does
them and nothing else (no cryptography, no protocol decision):

1. ``global_vector = flat.get()`` before local training (the weights the client got);
2. after training, ``update = flat.update(global_vector, max_norm=C)``: the delta
   ``w_local - w_global`` as float32, optionally clipped to L2 norm ``C``;
3. hand ``update`` to an aggregator (plain, SecAgg, SecAgg+, CKKS: see
   :mod:`fedcrypt.integrations.aggregators`) which returns the (weighted) mean delta;
4. ``flat.apply(global_vector, mean_delta)`` sets ``w = w_global + mean_delta``.

Invariants:

* :meth:`FlatParameters.get` then :meth:`FlatParameters.set` is a bit-exact round trip for
  float32 parameters (float16/bfloat16 values are exact in float32 too);
* the layout covers exactly the parameters chosen at construction, in
  ``named_parameters()`` order; a module whose parameters changed shape or dtype since,
  or a vector of another length, raises :class:`~fedcrypt.errors.SpecMismatchError`
  naming what differed, before any parameter is written;
* clipping is :func:`fedcrypt.dp.clip_l2` (re-exported here): it never increases a norm
  and leaves vectors within the bound untouched.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from fedcrypt._optional import require
from fedcrypt.dp.clipping import clip_l2  # re-exported: the one L2 clipping of fedcrypt
from fedcrypt.errors import SpecMismatchError
from fedcrypt.vectors import TensorSpec

__all__ = ["FlatParameters", "clip_l2"]


class FlatParameters:
    """A torch module's chosen parameters as one flat float32 vector, read and written in place.

    Math: ``get()`` concatenates the parameters row-major (a
    :class:`~fedcrypt.vectors.TensorSpec` layout); an update is ``get() - w_global``; applying
    a mean update ``d`` sets the parameters to ``w_global + d`` (FedAvg, McMahan et al. 2017,
    Algorithm 1, server step ``w <- sum_k (n_k / n) w_k``, written as a mean of deltas).

    Threat model: none of its own; it only moves numbers. Privacy comes from the aggregator
    the update is handed to, and from clipping (bounded sensitivity for DP).

    Args:
        module: a ``torch.nn.Module``.
        names: parameter names to include; default every parameter with
            ``requires_grad=True`` (e.g. only the LoRA matrices of a peft model).

    Raises:
        ValueError: a name that is not a parameter of ``module``, or nothing to include.
    """

    def __init__(self, module: Any, names: Iterable[str] | None = None) -> None:
        torch = require("torch", "peft")
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
        named = dict(module.named_parameters())
        if names is None:
            chosen = [n for n, p in named.items() if p.requires_grad]
        else:
            chosen = list(names)
            for name in chosen:
                if name not in named:
                    raise ValueError(f"{name!r} is not a parameter of the module")
        if not chosen:
            raise ValueError("the module has no parameters to federate (none requires grad)")
        self.module = module
        self.spec = TensorSpec.from_tensors({n: named[n].detach() for n in chosen})

    @property
    def size(self) -> int:
        """Length of the flat vector."""
        return self.spec.size

    def _parameters(self) -> dict[str, Any]:
        named = dict(self.module.named_parameters())
        selected = {}
        for entry in self.spec.entries:
            if entry.name not in named:
                raise SpecMismatchError(f"parameter {entry.name!r} is no longer in the module")
            selected[entry.name] = named[entry.name].detach()
        self.spec.check(selected)
        return selected

    def get(self) -> np.ndarray:
        """The current values as a new float32 vector."""
        return self.spec.flatten(self._parameters())

    def set(self, vector: np.ndarray) -> None:
        """Overwrite the parameters with ``vector`` (checked fully before writing)."""
        torch = require("torch", "peft")
        parameters = self._parameters()
        tensors = self.spec.unflatten(self.spec.check_vector(vector), framework="torch")
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(tensors[name])

    def update(self, global_vector: np.ndarray, *, max_norm: float | None = None) -> np.ndarray:
        """``get() - global_vector`` in float32, clipped to L2 norm ``max_norm`` if given."""
        self.spec.check_vector(global_vector)
        delta = (self.get().astype(np.float64) - global_vector).astype(np.float32)
        if max_norm is not None:
            delta, _ = clip_l2(delta, max_norm)
        return delta

    def apply(self, global_vector: np.ndarray, mean_update: np.ndarray) -> None:
        """Set the parameters to ``global_vector + mean_update`` (the aggregate)."""
        self.spec.check_vector(global_vector)
        self.spec.check_vector(mean_update)
        self.set((global_vector.astype(np.float64) + mean_update).astype(np.float32))

    def __repr__(self) -> str:
        return f"FlatParameters({len(self.spec.entries)} tensors, {self.size} parameters)"
