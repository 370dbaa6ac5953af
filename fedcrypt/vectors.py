"""Tensors <-> one flat float32 vector, and the fixed-point ring codec.

This is the only module of fedcrypt that knows about shapes. Every protocol takes and
returns one 1-D numpy vector: float32 before encoding, uint32/uint64 ring elements after.

Invariants:

* :meth:`TensorSpec.flatten` followed by :meth:`TensorSpec.unflatten` is bit-exact for
  float32 tensors; float16 and bfloat16 values are exactly representable in float32 and so
  round-trip exactly too. float64 tensors are accepted and rounded to float32 (documented
  loss).
* Two parties that computed the same :meth:`TensorSpec.digest` agree on names, order,
  shapes and dtypes of the layout.
* :class:`FixedPointCodec` refuses, at construction, every parameter set for which the sum
  of ``num_clients`` encodings could wrap around the ring.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Mapping

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.errors import EncodingError, OverflowRiskError, SpecMismatchError

__all__ = ["TensorSpec", "TensorEntry", "FixedPointCodec", "ClipReport", "SUPPORTED_DTYPES", "check_float_vector"]

#: dtype names a TensorSpec accepts, with their wire codes.
SUPPORTED_DTYPES: dict[str, int] = {"float32": 1, "float16": 2, "bfloat16": 3, "float64": 4}
_DTYPE_BY_CODE = {code: name for name, code in SUPPORTED_DTYPES.items()}

_SPEC_MAGIC = b"FCTS"
_SPEC_VERSION = 1
_MAX_ENTRIES = 1 << 20
_MAX_NDIM = 32
_MAX_NAME_BYTES = 4096
#: Upper bound on the parameter count a decoded spec may describe (2^40 ~ 1.1e12).
MAX_PARAMETERS = 1 << 40


def _torch_or_none() -> Any:
    """The torch module if the caller's process already imported it, else None.

    fedcrypt never imports torch itself here: a mapping can only hold torch tensors if
    torch was imported by whoever built it.
    """
    import sys

    return sys.modules.get("torch")


def _is_torch_tensor(value: Any) -> bool:
    torch = _torch_or_none()
    return torch is not None and isinstance(value, torch.Tensor)


def _dtype_name(value: Any) -> str:
    if _is_torch_tensor(value):
        name = str(value.dtype).removeprefix("torch.")
    else:
        name = str(np.asarray(value).dtype) if not isinstance(value, np.ndarray) else str(value.dtype)
    return name


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One named tensor of a :class:`TensorSpec`: its name, shape and dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        """Number of elements (1 for a 0-d tensor, 0 for an empty one)."""
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """The layout of a mapping of tensors as one flat float32 vector.

    Entries keep the order of the mapping the spec was built from (a PyTorch
    ``state_dict`` order); :meth:`flatten` accepts mappings in any key order and writes
    each tensor at its entry's offset.

    Example:
        >>> spec = TensorSpec.from_tensors({"a": np.ones((2, 3), np.float32)})
        >>> spec.unflatten(spec.flatten({"a": np.zeros((2, 3), np.float32)}))["a"].shape
        (2, 3)
    """

    entries: tuple[TensorEntry, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for entry in self.entries:
            if not isinstance(entry, TensorEntry):
                raise TypeError(f"TensorSpec entries must be TensorEntry, got {type(entry).__name__}")
            if entry.name in seen:
                raise ValueError(f"duplicate tensor name {entry.name!r} in TensorSpec")
            seen.add(entry.name)
            if entry.dtype not in SUPPORTED_DTYPES:
                raise ValueError(f"tensor {entry.name!r} has unsupported dtype {entry.dtype!r}; supported: {sorted(SUPPORTED_DTYPES)}")
            if any((not isinstance(d, int)) or d < 0 for d in entry.shape):
                raise ValueError(f"tensor {entry.name!r} has an invalid shape {entry.shape!r}")
            if len(entry.shape) > _MAX_NDIM:
                raise ValueError(f"tensor {entry.name!r} has {len(entry.shape)} dims (max {_MAX_NDIM})")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Any]) -> "TensorSpec":
        """Describe a mapping of numpy arrays or torch tensors (names, shapes, dtypes)."""
        if not isinstance(tensors, Mapping):
            raise TypeError(f"expected a mapping of name -> tensor, got {type(tensors).__name__}")
        entries = []
        for name, value in tensors.items():
            if not isinstance(name, str):
                raise TypeError(f"tensor names must be str, got {type(name).__name__}")
            if not (_is_torch_tensor(value) or isinstance(value, np.ndarray)):
                raise TypeError(f"tensor {name!r} is a {type(value).__name__}; expected a numpy array or torch tensor")
            entries.append(TensorEntry(name, tuple(int(d) for d in value.shape), _dtype_name(value)))
        return cls(tuple(entries))

    # ------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        """Total number of parameters, the length of the flat vector."""
        return sum(e.size for e in self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names in layout order."""
        return tuple(e.name for e in self.entries)

    def offsets(self) -> list[tuple[TensorEntry, int]]:
        """Each entry with the offset of its first element in the flat vector."""
        result, offset = [], 0
        for entry in self.entries:
            result.append((entry, offset))
            offset += entry.size
        return result

    # ------------------------------------------------------------------ checking
    def check(self, tensors: Mapping[str, Any]) -> None:
        """Raise :class:`SpecMismatchError` naming the first difference from this spec."""
        if not isinstance(tensors, Mapping):
            raise TypeError(f"expected a mapping of name -> tensor, got {type(tensors).__name__}")
        expected = self.names
        for name in expected:
            if name not in tensors:
                raise SpecMismatchError(f"tensor {name!r} is missing (the spec has {len(expected)} tensors)")
        if len(tensors) != len(expected):
            extra = next(n for n in tensors if n not in set(expected))
            raise SpecMismatchError(f"tensor {extra!r} is not in the spec")
        for entry in self.entries:
            value = tensors[entry.name]
            if not (_is_torch_tensor(value) or isinstance(value, np.ndarray)):
                raise TypeError(f"tensor {entry.name!r} is a {type(value).__name__}; expected a numpy array or torch tensor")
            shape = tuple(int(d) for d in value.shape)
            if shape != entry.shape:
                raise SpecMismatchError(f"tensor {entry.name!r} has shape {shape}, the spec says {entry.shape}")
            dtype = _dtype_name(value)
            if dtype != entry.dtype:
                raise SpecMismatchError(f"tensor {entry.name!r} has dtype {dtype}, the spec says {entry.dtype}")

    # ------------------------------------------------------------------ flat vector
    def flatten(self, tensors: Mapping[str, Any]) -> np.ndarray:
        """Copy a mapping matching this spec into one new 1-D float32 vector."""
        self.check(tensors)
        out = np.empty(self.size, dtype=np.float32)
        torch = _torch_or_none()
        out_torch = None
        for entry, offset in self.offsets():
            value = tensors[entry.name]
            n = entry.size
            if n == 0:
                continue
            if _is_torch_tensor(value):
                if out_torch is None:
                    out_torch = torch.from_numpy(out)
                out_torch[offset : offset + n].copy_(value.detach().reshape(-1))
            else:
                out[offset : offset + n] = value.reshape(-1)
        return out

    def unflatten(
        self,
        vector: np.ndarray,
        *,
        framework: Literal["numpy", "torch"] = "numpy",
    ) -> dict[str, Any]:
        """Split a flat vector back into tensors of this spec's shapes and dtypes.

        Args:
            vector: 1-D float array of length ``self.size`` (float32, or float64 which is
                rounded to the tensors' dtypes).
            framework: ``"numpy"`` returns numpy arrays (bfloat16 needs ``ml_dtypes``),
                ``"torch"`` returns CPU torch tensors.

        Returns:
            A new dict in layout order; no tensor shares memory with ``vector``.
        """
        vector = self.check_vector(vector)
        if framework == "torch":
            from fedcrypt._optional import require

            torch = require("torch", "peft")
            source = torch.from_numpy(np.ascontiguousarray(vector))
            result: dict[str, Any] = {}
            for entry, offset in self.offsets():
                dtype = getattr(torch, entry.dtype)
                piece = source[offset : offset + entry.size].reshape(entry.shape)
                result[entry.name] = piece.to(dtype=dtype, copy=True)
            return result
        if framework != "numpy":
            raise ValueError(f"framework must be 'numpy' or 'torch', got {framework!r}")
        # One allocation per dtype, each tensor a view of its block: many small fresh
        # allocations cost more in page faults than the copy itself.
        blocks: dict[str, np.ndarray] = {}
        offsets = self.offsets()
        dtypes = {entry.dtype for entry, _ in offsets}
        if len(dtypes) == 1:
            (only,) = dtypes
            blocks[only] = vector.astype(_numpy_dtype(only), copy=True)
            positions = {entry.name: offset for entry, offset in offsets}
        else:
            positions, fill = {}, dict.fromkeys(dtypes, 0)
            for entry, _ in offsets:
                positions[entry.name] = fill[entry.dtype]
                fill[entry.dtype] += entry.size
            for dtype, total in fill.items():
                blocks[dtype] = np.empty(total, dtype=_numpy_dtype(dtype))
            for entry, offset in offsets:
                start = positions[entry.name]
                blocks[entry.dtype][start : start + entry.size] = vector[offset : offset + entry.size]
        result = {}
        for entry, _ in offsets:
            start = positions[entry.name]
            result[entry.name] = blocks[entry.dtype][start : start + entry.size].reshape(entry.shape)
        return result

    def check_vector(self, vector: np.ndarray) -> np.ndarray:
        """Return ``vector`` if it is a 1-D float32/float64 array of length ``self.size``.

        Raises:
            TypeError: not a numpy array.
            SpecMismatchError: wrong number of dimensions, length or dtype (named).
        """
        if not isinstance(vector, np.ndarray):
            raise TypeError(f"expected a numpy vector, got {type(vector).__name__}")
        if vector.ndim != 1:
            raise SpecMismatchError(f"expected a 1-D vector, got shape {vector.shape}")
        if vector.shape[0] != self.size:
            raise SpecMismatchError(f"vector has length {vector.shape[0]}, the spec needs {self.size}")
        if vector.dtype not in (np.float32, np.float64):
            raise SpecMismatchError(f"vector has dtype {vector.dtype}, expected float32")
        return vector

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Canonical, versioned encoding (the input of :meth:`digest`)."""
        parts = [_SPEC_MAGIC, struct.pack(">BI", _SPEC_VERSION, len(self.entries))]
        for entry in self.entries:
            name = entry.name.encode("utf-8")
            parts.append(struct.pack(">H", len(name)))
            parts.append(name)
            parts.append(struct.pack(">BB", SUPPORTED_DTYPES[entry.dtype], len(entry.shape)))
            parts.append(struct.pack(f">{len(entry.shape)}Q", *entry.shape))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "TensorSpec":
        """Strictly decode :meth:`to_bytes` output.

        Raises:
            MalformedMessageError: wrong magic or version, truncated or trailing bytes, a
                duplicate or non-UTF-8 name, an unknown dtype, or a layout larger than
                ``MAX_PARAMETERS``. Lengths are checked before anything is allocated.
        """
        reader = Reader(data, "TensorSpec")
        if reader.take(4) != _SPEC_MAGIC:
            raise reader.error("bad magic")
        version = reader.u8()
        if version != _SPEC_VERSION:
            raise reader.error(f"unsupported version {version}")
        count = reader.count(4, _MAX_ENTRIES, "entry count")
        entries, names, total = [], set(), 0
        for _ in range(count):
            name_len = reader.u16()
            if name_len > _MAX_NAME_BYTES:
                raise reader.error(f"name of {name_len} bytes (max {_MAX_NAME_BYTES})")
            try:
                name = reader.take(name_len).decode("utf-8")
            except UnicodeDecodeError:
                raise reader.error("name is not UTF-8") from None
            code, ndim = reader.unpack(">BB")
            if code not in _DTYPE_BY_CODE:
                raise reader.error(f"unknown dtype code {code}")
            if ndim > _MAX_NDIM:
                raise reader.error(f"{ndim} dims (max {_MAX_NDIM})")
            shape = reader.unpack(f">{ndim}Q")
            if name in names:
                raise reader.error(f"duplicate name {name!r}")
            names.add(name)
            size = math.prod(shape)
            total += size
            if size > MAX_PARAMETERS or total > MAX_PARAMETERS:
                raise reader.error(f"more than {MAX_PARAMETERS} parameters")
            entries.append(TensorEntry(name, tuple(int(d) for d in shape), _DTYPE_BY_CODE[code]))
        reader.expect_end()
        return cls(tuple(entries))

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: equal digests mean an identical layout."""
        return hashlib.sha256(self.to_bytes()).digest()

    def __repr__(self) -> str:
        return f"TensorSpec({len(self.entries)} tensors, {self.size} parameters, digest={self.digest().hex()[:16]})"


def _numpy_dtype(name: str) -> Any:
    if name == "bfloat16":
        try:
            import ml_dtypes  # type: ignore[import-not-found]
        except ImportError:
            raise SpecMismatchError(
                "bfloat16 tensors need the 'ml_dtypes' package for numpy output; install it or call unflatten(..., framework='torch')"
            ) from None
        return ml_dtypes.bfloat16
    return np.dtype(name)


def check_float_vector(vector: object) -> np.ndarray:
    """Return ``vector`` if it is a 1-D numpy array of a float dtype.

    The check every protocol entry point makes before it reads a client's vector.

    Raises:
        TypeError: not a numpy array.
        EncodingError: not 1-D, or not a float dtype (the message names which).
    """
    if not isinstance(vector, np.ndarray):
        raise TypeError(f"expected a numpy vector, got {type(vector).__name__}")
    if vector.ndim != 1:
        raise EncodingError(f"expected a 1-D vector, got shape {vector.shape}")
    if not np.issubdtype(vector.dtype, np.floating):
        raise EncodingError(f"expected a float vector, got dtype {vector.dtype}")
    return vector


# ====================================================================== clip reports
@dataclass(frozen=True, slots=True)
class ClipReport:
    """What clipping did to one vector, so that a caller can say so (issue #18: clipping
    silently changed results).

    Two kinds:

    * ``"coordinate"`` (:meth:`FixedPointCodec.encode_with_report`): each coordinate is
      clipped to ``[-clip, clip]``; ``clipped`` coordinates were outside (+-inf included)
      and changed; ``norm`` is ``None``.
    * ``"l2"`` (``fedcrypt.dp.clip_l2_with_report``, ``DistributedDp.encode_with_report``):
      the whole vector is scaled into the L2 ball of radius ``clip``; ``norm`` is its L2
      norm before clipping; when ``norm > clip`` every nonzero coordinate was scaled by
      :attr:`factor` and ``clipped`` counts them, else ``clipped`` is 0.

    A report describes the client's own input (its norm, how many coordinates were large):
    log it on the client; it is not meant to be sent to the server.

    Attributes:
        kind: ``"coordinate"`` or ``"l2"``.
        size: coordinates in the vector.
        clipped: coordinates that clipping changed.
        clip: the bound (L-infinity for ``"coordinate"``, L2 for ``"l2"``).
        norm: the L2 norm before clipping (``"l2"`` only).
    """

    kind: Literal["coordinate", "l2"]
    size: int
    clipped: int
    clip: float
    norm: float | None = None

    @property
    def any(self) -> bool:
        """Whether clipping changed anything."""
        return self.clipped > 0

    @property
    def fraction(self) -> float:
        """``clipped / size`` (0 for an empty vector)."""
        return self.clipped / self.size if self.size else 0.0

    @property
    def factor(self) -> float:
        """L2 clipping's scale factor ``min(1, clip / norm)``; 1.0 for coordinate clipping."""
        if self.kind != "l2" or self.norm is None or self.norm <= self.clip:
            return 1.0
        return self.clip / self.norm

    def __str__(self) -> str:
        if self.kind == "coordinate":
            return f"clipped {self.clipped:,} of {self.size:,} coordinates to [-{self.clip:g}, {self.clip:g}]"
        if not self.any:
            return f"L2 norm {self.norm:.4g} within the clip {self.clip:g}: nothing clipped"
        return f"L2 norm {self.norm:.4g} clipped to {self.clip:g}: {self.clipped:,} of {self.size:,} coordinates scaled by {self.factor:.4g}"


# ====================================================================== fixed point
_RING = {32: (np.uint32, np.int32), 64: (np.uint64, np.int64)}
#: the largest power-of-two exponent of a finite float64 scale
_MAX_SCALE_EXPONENT = 1023
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ENCODE_CHUNK = 1 << 15  # elements per pass: the working buffers stay in L2


class FixedPointCodec:
    """Float32 vectors <-> elements of the ring Z_(2^bits), summable without wrap-around.

    Encoding of one value ``x``:

        x' = clip(x, -clip, clip)
        q  = floor(x' * scale) + Bernoulli(frac(x' * scale))     (unbiased: E[q] = x' * scale)
        q  = clip(q, -B, B),  B = floor(clip * scale) + 1
        encoding = q mod 2^bits

    The coins come from ``rng`` (rounding coins are not secret material). With
    ``bits=32``, a power-of-two ``scale >= 1`` (the default), a clip that is a float32
    value (1.0, 0.5, ...) and float32 input, encoding
    runs in float32, where ``x' * scale`` and its floor are exact and the coins are float32
    uniforms (multiples of 2^-24): E[q] equals ``x' * scale`` exactly when
    ``|x' * scale| >= 1`` and within 2^-23 of it below one quantisation step. Otherwise it
    runs in float64 with float64 coins.

    Decoding a ring sum of ``count`` encodings reads it as a signed ``bits``-bit integer
    and divides by ``scale``. The overflow guard, checked in exact rational arithmetic at
    construction, is

        num_clients * B <= 2^(bits-1) - 1,

    so the signed sum of up to ``num_clients`` encodings never wraps.

    Worst-case error of one decoded sum, per coordinate, against the sum of the clipped
    inputs ``S = sum_i clip(x_i)``:

        |decode_sum - S| <= count / scale + count * clip * 2^-52

    (each stochastic rounding moves a value by less than ``1/scale``; the second term is
    the float64 division). With ``rounding="nearest"`` the first term halves to
    ``count / (2 * scale)``. The result is float64; convert to float32 if you need it.

    Args:
        clip: L-infinity clipping bound, > 0 (values outside [-clip, clip] are clipped).
        bits: ring size, 32 or 64.
        num_clients: the largest number of encodings that will be summed.
        scale: fixed-point scale; default the largest power of two the guard accepts
            (a power of two keeps ``x * scale`` exact for float32 inputs).
        rounding: ``"stochastic"`` (unbiased; default) or ``"nearest"``.

    Raises:
        OverflowRiskError: if the guard fails; the message names the bound.
        EncodingError: (a ``ValueError``) a clip so small (subnormal, e.g. 5e-324) or a
            clip * scale so extreme that no float64 scale encodes it; a decoder of a
            peer's bytes that builds a codec therefore gets a typed error.
        ValueError: for a non-positive or non-finite clip, scale or num_clients, or bits
            not in {32, 64}.
    """

    __slots__ = ("clip", "bits", "num_clients", "scale", "rounding", "bound")

    def __init__(
        self,
        clip: float,
        bits: int = 32,
        num_clients: int = 1,
        scale: float | None = None,
        rounding: Literal["stochastic", "nearest"] = "stochastic",
    ) -> None:
        if bits not in _RING:
            raise ValueError(f"bits must be 32 or 64, got {bits!r}")
        if not isinstance(num_clients, (int, np.integer)) or isinstance(num_clients, bool) or num_clients < 1:
            raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
        clip = float(clip)
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {clip!r}")
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
        limit = (1 << (bits - 1)) - 1
        if scale is None:
            # floor(clip*scale) + 1 <= limit // n, and clip*scale < 2^52 (float64-exact)
            per_client = min(limit // int(num_clients) - 1, (1 << 52) - 1)
            if per_client < 1:
                raise OverflowRiskError(
                    f"{num_clients} clients cannot share a {bits}-bit ring: num_clients * (floor(clip*scale)+1) <= 2^{bits - 1}-1 has no solution"
                )
            # the largest power of two with clip * scale <= per_client (the ratio overflows
            # float64 for a subnormal clip: then the difference of the logarithms)
            ratio = per_client / clip
            exponent = math.floor(math.log2(ratio) if math.isfinite(ratio) else math.log2(per_client) - math.log2(clip))
            if exponent > _MAX_SCALE_EXPONENT:
                raise EncodingError(f"clip {clip!r} is too small: the scale it needs, 2^{exponent}, is beyond 2^{_MAX_SCALE_EXPONENT} (float64)")
            scale = math.ldexp(1.0, exponent)
            while Fraction(clip) * Fraction(scale) > per_client:
                scale /= 2
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        if clip * scale == 0.0 or not math.isfinite(clip * scale):
            raise EncodingError(f"clip * scale = {clip!r} * {scale!r} is not a positive finite float64")
        bound = math.floor(Fraction(clip) * Fraction(scale)) + 1
        if int(num_clients) * bound > limit:
            raise OverflowRiskError(
                f"overflow guard: num_clients * (floor(clip*scale)+1) = {int(num_clients)} * {bound} "
                f"exceeds 2^{bits - 1}-1 = {limit}; lower scale or clip, or use bits=64"
            )
        if bound > (1 << 52):
            raise OverflowRiskError(f"clip*scale = {bound - 1} exceeds 2^52, beyond float64's exact integers; lower scale")
        self.clip = clip
        self.bits = bits
        self.num_clients = int(num_clients)
        self.scale = scale
        self.rounding = rounding
        self.bound = bound

    def __repr__(self) -> str:
        return (
            f"FixedPointCodec(clip={self.clip!r}, bits={self.bits}, num_clients={self.num_clients}, scale={self.scale!r}, rounding={self.rounding!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FixedPointCodec):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, s) for s in self.__slots__))

    @property
    def ring_dtype(self) -> np.dtype:
        """``uint32`` or ``uint64``."""
        return np.dtype(_RING[self.bits][0])

    def error_bound(self, count: int) -> float:
        """The documented worst-case per-coordinate error of a decoded sum of ``count``."""
        rounding = count / self.scale if self.rounding == "stochastic" else count / (2 * self.scale)
        return rounding + count * self.clip * 2.0**-52

    def encode(self, vector: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Encode a 1-D float vector into a new uint32/uint64 ring vector.

        Args:
            vector: 1-D float array; NaN is refused, +-inf is clipped.
            rng: source of the rounding coins (not secret material); default a fresh
                ``np.random.default_rng()`` seeded by the OS.
        """
        return self._encode(vector, rng, None)

    def encode_with_report(self, vector: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, ClipReport]:
        """:meth:`encode`, and a :class:`ClipReport` of the coordinates clipped to ``[-clip, clip]``.

        Counting runs inside the encoding pass (each chunk is still in cache), so it costs
        little beyond :meth:`encode`.
        """
        counted = [0]
        ring = self._encode(vector, rng, counted)
        return ring, ClipReport("coordinate", int(vector.shape[0]), counted[0], self.clip)

    def clip_report(self, vector: np.ndarray) -> ClipReport:
        """The :class:`ClipReport` that encoding ``vector`` would have, without encoding it.

        For callers that hand the float vector to a protocol object that encodes it
        (``fedcrypt.secagg.ClientProtocol.set_input``): one pass over the vector.
        """
        check_float_vector(vector)
        if np.isnan(vector).any():
            raise EncodingError("vector contains NaN")
        clipped = int(np.count_nonzero(np.abs(vector) > np.float64(self.clip)))  # compared in float64, as encoding clips
        return ClipReport("coordinate", int(vector.shape[0]), clipped, self.clip)

    def _encode(self, vector: np.ndarray, rng: np.random.Generator | None, counted: list[int] | None) -> np.ndarray:
        check_float_vector(vector)
        if np.isnan(vector).any():
            raise EncodingError("vector contains NaN")
        if self.rounding == "stochastic" and rng is None:
            rng = np.random.default_rng()
        unsigned, signed = _RING[self.bits]
        out = np.empty(vector.shape[0], dtype=signed)
        if self._float32_exact and vector.dtype == np.float32:
            self._encode_float32(vector, out, rng, counted)
        else:
            self._encode_float64(vector, out, rng, counted)
        return out.view(unsigned)

    @property
    def _float32_exact(self) -> bool:
        # x * scale is exact in float32 for float32 x when scale is a power of two >= 1
        # and |x * scale| stays below 2^31 (bits=32): floor, fraction and the int32
        # conversion are then exact, and |q| <= floor(clip*scale) + 1 = bound holds
        # without a final clip.
        mantissa, _ = math.frexp(self.scale)
        # clip must be a float32 value, so that clipping in float32 equals clipping to clip.
        clip_is_float32 = self.clip <= _FLOAT32_MAX and float(np.float32(self.clip)) == self.clip
        return self.bits == 32 and mantissa == 0.5 and self.scale >= 1.0 and clip_is_float32

    def _encode_float32(self, vector: np.ndarray, out: np.ndarray, rng: np.random.Generator | None, counted: list[int] | None) -> None:
        clip32 = np.float32(self.clip)  # exact: checked by _float32_exact
        scale32 = np.float32(self.scale)
        n = vector.shape[0]
        step = max(1, min(_ENCODE_CHUNK, n))
        scaled = np.empty(step, np.float32)
        floor = np.empty(step, np.float32)
        coins = np.empty(step, np.float32)
        below = np.empty(step, np.bool_)
        for start in range(0, n, step):
            m = min(step, n - start)
            t, f = scaled[:m], floor[:m]
            chunk = vector[start : start + m]
            if counted is not None:  # before clipping: values outside [-clip, clip] (+-inf too)
                counted[0] += int(np.count_nonzero(np.abs(chunk) > clip32))
            np.clip(chunk, -clip32, clip32, out=t)
            t *= scale32
            if self.rounding == "nearest":
                np.rint(t, out=f)
            else:
                np.floor(t, out=f)
                t -= f  # the fraction, exact
                assert rng is not None  # encode() supplies one for stochastic rounding
                rng.random(m, dtype=np.float32, out=coins[:m])
                np.less(coins[:m], t, out=below[:m])
                f += below[:m]
            out[start : start + m] = f

    def _encode_float64(self, vector: np.ndarray, out: np.ndarray, rng: np.random.Generator | None, counted: list[int] | None) -> None:
        n = vector.shape[0]
        step = max(1, min(_ENCODE_CHUNK, n))
        scaled = np.empty(step, np.float64)
        coins = np.empty(step, np.float64)
        q = np.empty(step, np.int64)
        for start in range(0, n, step):
            m = min(step, n - start)
            t = scaled[:m]
            t[:] = vector[start : start + m]
            if counted is not None:  # in float64, as clipping compares
                counted[0] += int(np.count_nonzero(np.abs(t) > self.clip))
            np.clip(t, -self.clip, self.clip, out=t)
            t *= self.scale
            if self.rounding == "nearest":
                np.rint(t, out=t)
            else:
                f = np.floor(t)
                t -= f
                assert rng is not None  # encode() supplies one for stochastic rounding
                rng.random(m, out=coins[:m])
                np.less(coins[:m], t, out=t, casting="unsafe")
                t += f
            q[:m] = t
            np.clip(q[:m], -self.bound, self.bound, out=q[:m])
            out[start : start + m] = q[:m]

    def decode_sum(self, ring_sum: np.ndarray, count: int) -> np.ndarray:
        """Decode a ring sum of ``count`` encodings into the float64 sum of the inputs."""
        if not isinstance(ring_sum, np.ndarray):
            raise TypeError(f"expected a numpy vector, got {type(ring_sum).__name__}")
        unsigned, signed = _RING[self.bits]
        if ring_sum.dtype != unsigned or ring_sum.ndim != 1:
            raise EncodingError(f"expected a 1-D {np.dtype(unsigned)} ring vector, got {ring_sum.ndim}-D {ring_sum.dtype}")
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or not 0 <= count <= self.num_clients:
            raise EncodingError(f"count must be an integer in [0, num_clients={self.num_clients}], got {count!r}")
        return ring_sum.view(signed).astype(np.float64) / self.scale

    def decode(self, ring_vector: np.ndarray) -> np.ndarray:
        """Decode one encoding (``decode_sum`` with count 1)."""
        return self.decode_sum(ring_vector, 1)
