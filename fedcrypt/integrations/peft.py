"""PEFT / LoRA adapter: a peft model's trainable LoRA state <-> one flat float32 vector.

This module translates; it holds no cryptography and makes no protocol decision. It turns
the adapter state that ``peft.get_peft_model_state_dict`` returns into the single 1-D
vector every fedcrypt protocol takes (through :class:`fedcrypt.vectors.TensorSpec`), loads
an aggregate back with ``peft.set_peft_model_state_dict``, and computes the bytes a client
binds into a secure-aggregation round so that clients given different global models fail
the round instead of leaking (see :func:`round_binding`).

Aggregation modes (:class:`LoraMode`) and what a secure sum of them means. Write one LoRA
module as ``W = W0 + s * B @ A`` with ``A`` of shape ``(r, in)``, ``B`` of shape
``(out, r)`` and ``s = alpha / r``:

* ``fedit`` (FedIT, Zhang et al., ICASSP 2024): average ``A`` and ``B`` separately. The
  secure sum of the vectors is exact (up to the fixed-point codec's documented rounding),
  but the model it gives is *not* the average of the clients' models:
  ``mean(B_i) @ mean(A_i) != mean(B_i @ A_i)`` in general. This is the mode's own
  approximation, identical with or without encryption.
* ``ffa`` (FFA-LoRA, Sun et al., ICLR 2024): ``A`` stays frozen at its shared
  initialisation and only ``B`` (plus any non-LoRA trainable tensors) is aggregated. The
  update ``s * B @ A`` is linear in ``B``, so the average of ``B`` gives exactly the
  average of the clients' updates: exact and linear.
* ``heterogeneous`` (zero-padding, as in HetLoRA, Cho et al., 2024): each client pads ``A``
  with zero rows and ``B`` with zero columns up to the largest rank ``R``. Padding does not
  change ``B @ A``, and the padded vectors all have one layout, so they can be summed
  securely (exactly, as for ``fedit``); loading the average truncates it back to the
  client's own rank ``r``, which drops the components ``r..R`` (lossy, as in HetLoRA). The
  scaling ``alpha / r`` differs per rank; give every client the same ``alpha / r`` if the
  padded updates must be on one scale.
* ``stacking`` (FLoRA, Wang et al., NeurIPS 2024): the server concatenates every client's
  own ``A`` and ``B``. That needs individual adapters, which secure aggregation (SecAgg,
  SecAgg+, CKKS) exists to hide: :func:`check_mode` refuses it with
  :class:`~fedcrypt.errors.AggregationModeError` whenever ``secure=True``.

Invariants:

* :meth:`LoraLayout.flatten` then :meth:`LoraLayout.load` restores a model's LoRA tensors
  bit for bit (float32/float16/bfloat16 adapters), padding and truncation included;
* a vector, model or spec that differs from the layout raises
  :class:`~fedcrypt.errors.SpecMismatchError` naming the tensor, shape, dtype or length
  that differed, before anything in the model is changed;
* two clients compute the same :func:`round_binding` only if their global models are
  bit-identical and their layouts have the same digest.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from fedcrypt._optional import require
from fedcrypt.errors import AggregationModeError, SpecMismatchError
from fedcrypt.vectors import TensorEntry, TensorSpec

__all__ = [
    "LoraMode",
    "LoraLayout",
    "check_mode",
    "lora_state",
    "model_fingerprint",
    "round_binding",
    "freeze_lora_a",
    "lora_rank",
]

_BINDING_LABEL = b"fedcrypt/peft-round-binding/v1"
_FINGERPRINT_LABEL = b"fedcrypt/model-fingerprint/v1"


class LoraMode(str, enum.Enum):
    """How LoRA adapters are combined; see the module docstring for the math of each."""

    FEDIT = "fedit"
    FFA = "ffa"
    HETEROGENEOUS = "heterogeneous"
    STACKING = "stacking"

    @property
    def secure(self) -> bool:
        """Whether the mode only needs the sum of the clients' vectors."""
        return self is not LoraMode.STACKING

    @property
    def exact(self) -> bool:
        """Whether the averaged vector gives exactly the average of the clients' updates."""
        return self is LoraMode.FFA


def check_mode(mode: LoraMode | str, *, secure: bool) -> LoraMode:
    """Parse ``mode`` and refuse it if it cannot run under secure aggregation.

    Args:
        mode: a :class:`LoraMode` or its value (``"fedit"``, ``"ffa"``, ...).
        secure: whether the round uses SecAgg, SecAgg+ or CKKS (the server sees only sums).

    Raises:
        ValueError: for an unknown mode name.
        AggregationModeError: for ``stacking`` with ``secure=True``.
    """
    try:
        parsed = LoraMode(mode)
    except ValueError:
        raise ValueError(f"unknown LoRA aggregation mode {mode!r}; expected one of {[m.value for m in LoraMode]}") from None
    if secure and not parsed.secure:
        raise AggregationModeError(
            f"LoRA mode {parsed.value!r} needs each client's individual adapter (it concatenates "
            "them), which secure aggregation hides by design; use 'fedit', 'ffa' or "
            "'heterogeneous', or aggregate without SecAgg/CKKS"
        )
    return parsed


def _peft() -> Any:
    return require("peft", "peft")


def _torch() -> Any:
    return require("torch", "peft")


def _kind(name: str) -> str:
    """``"A"``, ``"B"`` or ``"other"`` for a key of a peft adapter state dict."""
    if ".lora_A." in name or ".lora_embedding_A" in name or name.endswith(".lora_A"):
        return "A"
    if ".lora_B." in name or ".lora_embedding_B" in name or name.endswith(".lora_B"):
        return "B"
    return "other"


def lora_state(model: Any, adapter_name: str = "default") -> dict[str, Any]:
    """The adapter's state (``get_peft_model_state_dict``) as detached tensors, in order.

    Args:
        model: a ``peft.PeftModel``.
        adapter_name: the adapter to read.
    """
    peft = _peft()
    if not isinstance(model, peft.PeftModel):
        raise TypeError(f"expected a peft.PeftModel, got {type(model).__name__}")
    if adapter_name not in model.peft_config:
        raise ValueError(f"the model has no adapter named {adapter_name!r}; it has {sorted(model.peft_config)}")
    state = peft.get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)
    return {name: tensor.detach() for name, tensor in state.items()}


def lora_rank(model: Any, adapter_name: str = "default") -> int:
    """The largest LoRA rank among the adapter's modules (rows of ``A``)."""
    ranks = [int(t.shape[0]) for n, t in lora_state(model, adapter_name).items() if _kind(n) == "A"]
    if not ranks:
        raise SpecMismatchError("the adapter has no LoRA A matrices")
    return max(ranks)


def freeze_lora_a(model: Any) -> int:
    """Set ``requires_grad=False`` on every LoRA ``A`` parameter (FFA-LoRA); returns how many."""
    count = 0
    for name, parameter in model.named_parameters():
        if _kind(name) == "A":
            parameter.requires_grad_(False)
            count += 1
    return count


def _padded_entry(name: str, shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    kind = _kind(name)
    axis = 0 if kind == "A" else 1
    if len(shape) <= axis:
        raise SpecMismatchError(f"tensor {name!r} has shape {shape}; a LoRA {kind} needs a rank axis {axis}")
    if shape[axis] > rank:
        raise SpecMismatchError(f"tensor {name!r} has rank {shape[axis]}, larger than the padded rank {rank}")
    padded = list(shape)
    padded[axis] = rank
    return tuple(padded)


@dataclass(frozen=True)
class LoraLayout:
    """The flat-vector layout of a peft model's LoRA adapter under one aggregation mode.

    Math: the vector is the concatenation, in ``get_peft_model_state_dict`` order, of the
    adapter tensors the mode aggregates (``fedit``: every trainable adapter tensor;
    ``ffa``: all but the ``A`` matrices; ``heterogeneous``: every tensor, ``A`` padded with
    zero rows and ``B`` with zero columns to ``padded_rank``), each flattened row-major
    into float32 (:class:`~fedcrypt.vectors.TensorSpec`).

    Threat model: none of its own. The layout is public; :func:`round_binding` puts its
    digest into a round's associated data so that clients using different layouts (or
    different global models) cannot complete a round together.

    Attributes:
        spec: the (padded) layout every client shares; ``spec.digest()`` is what parties
            compare.
        mode: the aggregation mode.
        adapter_name: the peft adapter it reads and writes.
        padded_rank: the common rank in ``heterogeneous`` mode, else ``None``.
    """

    spec: TensorSpec
    mode: LoraMode
    adapter_name: str = "default"
    padded_rank: int | None = None

    @classmethod
    def from_model(
        cls,
        model: Any,
        mode: LoraMode | str = LoraMode.FEDIT,
        *,
        adapter_name: str = "default",
        padded_rank: int | None = None,
        secure: bool = True,
    ) -> "LoraLayout":
        """Describe ``model``'s adapter under ``mode``.

        Args:
            model: a ``peft.PeftModel``.
            mode: the aggregation mode (:class:`LoraMode` or its value).
            adapter_name: the adapter to use.
            padded_rank: for ``heterogeneous`` mode, the largest rank of any client
                (required there, refused elsewhere).
            secure: whether the round is secure (refuses ``stacking``, see :func:`check_mode`).

        Raises:
            AggregationModeError: ``stacking`` under secure aggregation.
            ValueError: ``padded_rank`` missing, invalid or given for another mode.
            SpecMismatchError: an adapter rank larger than ``padded_rank``.
        """
        parsed = check_mode(mode, secure=secure)
        if parsed is LoraMode.STACKING:
            raise AggregationModeError(
                "stacking has no shared flat layout: each client's adapter is concatenated, not summed, so there is no vector to aggregate"
            )
        if parsed is LoraMode.HETEROGENEOUS:
            if not isinstance(padded_rank, int) or isinstance(padded_rank, bool) or padded_rank < 1:
                raise ValueError(f"heterogeneous mode needs padded_rank, a positive int; got {padded_rank!r}")
        elif padded_rank is not None:
            raise ValueError(f"padded_rank is only used in heterogeneous mode, not {parsed.value!r}")
        state = lora_state(model, adapter_name)
        entries = []
        for name, tensor in state.items():
            kind = _kind(name)
            if parsed is LoraMode.FFA and kind == "A":
                continue
            shape = tuple(int(d) for d in tensor.shape)
            if parsed is LoraMode.HETEROGENEOUS and kind != "other":
                assert padded_rank is not None  # checked above: heterogeneous mode has a positive int
                shape = _padded_entry(name, shape, padded_rank)
            entries.append(TensorEntry(name, shape, str(tensor.dtype).removeprefix("torch.")))
        if not entries:
            raise SpecMismatchError(f"adapter {adapter_name!r} has nothing to aggregate in mode {parsed.value!r}")
        return cls(TensorSpec(tuple(entries)), parsed, adapter_name, padded_rank)

    # ------------------------------------------------------------------ model -> vector
    def _selected(self, model: Any) -> dict[str, Any]:
        state = lora_state(model, self.adapter_name)
        if self.mode is LoraMode.FFA:
            state = {n: t for n, t in state.items() if _kind(n) != "A"}
        return state

    def _check_model(self, state: Mapping[str, Any]) -> None:
        """SpecMismatchError naming the first tensor whose name, shape or dtype differs."""
        expected = {e.name: e for e in self.spec.entries}
        for name in expected:
            if name not in state:
                raise SpecMismatchError(f"the model's adapter has no tensor {name!r} (the layout has {len(expected)})")
        for name, tensor in state.items():
            entry = expected.get(name)
            if entry is None:
                raise SpecMismatchError(f"the model's adapter has tensor {name!r}, which is not in the layout")
            shape = tuple(int(d) for d in tensor.shape)
            dtype = str(tensor.dtype).removeprefix("torch.")
            if dtype != entry.dtype:
                raise SpecMismatchError(f"tensor {name!r} has dtype {dtype} in the model, the layout says {entry.dtype}")
            if self.mode is LoraMode.HETEROGENEOUS and _kind(name) != "other":
                if _padded_entry(name, shape, self.padded_rank) != entry.shape:  # type: ignore[arg-type]
                    raise SpecMismatchError(f"tensor {name!r} has shape {shape} in the model, which does not pad to {entry.shape}")
            elif shape != entry.shape:
                raise SpecMismatchError(f"tensor {name!r} has shape {shape} in the model, the layout says {entry.shape}")

    def flatten(self, model: Any) -> np.ndarray:
        """The model's adapter as one new float32 vector of length ``spec.size``.

        Raises:
            SpecMismatchError: the model's adapter differs from the layout (names which).
        """
        torch = _torch()
        state = self._selected(model)
        self._check_model(state)
        if self.mode is LoraMode.HETEROGENEOUS:
            padded = {}
            for entry in self.spec.entries:
                tensor = state[entry.name]
                if tuple(tensor.shape) != entry.shape:
                    full = torch.zeros(entry.shape, dtype=tensor.dtype)
                    if _kind(entry.name) == "A":
                        full[: tensor.shape[0]] = tensor
                    else:
                        full[:, : tensor.shape[1]] = tensor
                    tensor = full
                padded[entry.name] = tensor
            state = padded
        return self.spec.flatten(state)

    # ------------------------------------------------------------------ vector -> model
    def load(self, model: Any, vector: np.ndarray) -> None:
        """Write an (aggregated) vector into the model's adapter, in place.

        Everything is checked before the model changes: the vector's length and dtype, and
        the model's adapter against the layout.

        Raises:
            SpecMismatchError: the vector has the wrong length or dtype, or the model's
                adapter differs from the layout (the message names what differed).
        """
        peft = _peft()
        state = self._selected(model)
        self._check_model(state)
        tensors = self.spec.unflatten(self.spec.check_vector(vector), framework="torch")
        if self.mode is LoraMode.HETEROGENEOUS:
            for name, current in state.items():
                if _kind(name) == "A":
                    tensors[name] = tensors[name][: current.shape[0]].contiguous()
                elif _kind(name) == "B":
                    tensors[name] = tensors[name][:, : current.shape[1]].contiguous()
        result = peft.set_peft_model_state_dict(model, tensors, adapter_name=self.adapter_name)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:  # pragma: no cover - _check_model guarantees the names exist
            raise SpecMismatchError(f"peft did not accept tensor {unexpected[0]!r}")

    def digest(self) -> bytes:
        """SHA-256 of the layout and mode: what :func:`round_binding` commits to."""
        h = hashlib.sha256(b"fedcrypt/lora-layout/v1")
        h.update(self.spec.digest())
        h.update(self.mode.value.encode())
        h.update(struct.pack(">Q", self.padded_rank or 0))
        return h.digest()


def model_fingerprint(model: Any) -> bytes:
    """SHA-256 over every tensor of ``model.state_dict()``: names, dtypes, shapes and bytes.

    For a peft model this covers the frozen base weights and the adapter the client starts
    from, i.e. the whole global model a client trains from. Two fingerprints are equal only
    if the models are bit-identical (up to SHA-256 collisions).
    """
    torch = _torch()
    h = hashlib.sha256(_FINGERPRINT_LABEL)
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        encoded = name.encode("utf-8")
        dtype = str(data.dtype).encode()
        h.update(struct.pack(">I", len(encoded)) + encoded)
        h.update(struct.pack(">I", len(dtype)) + dtype)
        h.update(struct.pack(f">I{data.dim()}Q", data.dim(), *data.shape))
        if data.numel():
            h.update(data.reshape(-1).view(torch.uint8).numpy())  # hashed in place, no copy
    return h.digest()


def round_binding(fingerprint: bytes, layout: LoraLayout | TensorSpec, round_number: int = 0) -> bytes:
    """The associated data a client binds into a secure-aggregation round.

    ``SHA-256(label || round || model fingerprint || layout digest)``. Every client passes
    it as the protocol's associated data (e.g. ``fedcrypt.secagg.ClientProtocol(...,
    associated_data=...)``); a server that hands different global models (or layouts) to
    different clients therefore makes their authenticated messages fail to verify and the
    round aborts, instead of the server learning a difference of updates computed on
    models it chose (the model-inconsistency attack, Pasquini et al., CCS 2022).

    Args:
        fingerprint: :func:`model_fingerprint` of the global model the client trained from.
        layout: the round's :class:`LoraLayout` (or a bare :class:`TensorSpec`).
        round_number: the training round, so bindings are never reused across rounds.
    """
    if not isinstance(fingerprint, (bytes, bytearray)) or len(fingerprint) != 32:
        raise ValueError("fingerprint must be the 32-byte output of model_fingerprint()")
    if not isinstance(round_number, int) or isinstance(round_number, bool) or round_number < 0:
        raise ValueError(f"round_number must be a non-negative int, got {round_number!r}")
    if isinstance(layout, LoraLayout):
        layout_digest = layout.digest()
    elif isinstance(layout, TensorSpec):
        layout_digest = layout.digest()
    else:
        raise TypeError(f"layout must be a LoraLayout or TensorSpec, got {type(layout).__name__}")
    h = hashlib.sha256(_BINDING_LABEL)
    h.update(struct.pack(">Q", round_number))
    h.update(bytes(fingerprint))
    h.update(layout_digest)
    return h.digest()
