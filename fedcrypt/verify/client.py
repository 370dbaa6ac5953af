"""The client side of a verified-aggregation round: encode, prove, share, seal.

:class:`VerifyClient` is fed the leader's :class:`~fedcrypt.verify.messages.UploadRequest`
(object or bytes) and returns its :class:`~fedcrypt.verify.messages.Report`. Its input is
given just before, with :meth:`VerifyClient.set_input` (a flat float vector laid out by the
config's :class:`~fedcrypt.vectors.TensorSpec`) or :meth:`VerifyClient.set_tensors`.

Invariants:

* one report per round: a second request for a round the client answered already, or for
  an earlier round, raises :class:`~fedcrypt.errors.UnexpectedMessageError` and changes
  nothing;
* every secret (the report id, the VDAF randomness, the ephemeral sealing key) comes from
  ``os.urandom`` / ``secrets`` through :mod:`fedcrypt.crypto`; the input is dropped once the
  report is made, and never appears in ``repr`` or state bytes;
* an honest client retries the sharding with fresh randomness while too few wraparound
  checks pass (:class:`~fedcrypt.verify.WraparoundRetry`; for a vector within the bound
  each retry happens with probability below ``2^-60`` at the default parameters);
* state bytes hold the config digest, the client id and the last round reported, nothing
  secret; decoding them needs the same config.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import Any, Mapping, NoReturn

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.errors import (
    ContextMismatchError,
    EncodingError,
    LocalProtocolError,
    UnexpectedMessageError,
)

from ._common import report_nonce, seal_helper_share
from .config import VerifyConfig
from .encoding import encode_vector, to_field
from .messages import REPORT_ID_BYTES, Report, Stage, UploadRequest, decode_message
from .pine import WraparoundRetry
from .vdaf import MeasurementEncoder

__all__ = ["VerifyClient", "make_report", "MAX_SHARD_TRIES"]

_STATE_MAGIC = b"FCVC"
_STATE_VERSION = 1
#: an honest client gives up after this many wraparound retries (each one has probability
#: below 2^-60 for a vector within the bound)
MAX_SHARD_TRIES = 16


def make_report(
    config: VerifyConfig,
    round_id: int,
    client: int,
    gradient: np.ndarray,
    *,
    encoder: MeasurementEncoder | None = None,
    max_tries: int = MAX_SHARD_TRIES,
) -> Report:
    """Prove and share an encoded gradient (``d`` field elements) as ``client``'s report.

    ``encoder`` is the honest one by default; :mod:`fedcrypt.testing` passes a dishonest one.

    Raises:
        EncodingError: a norm above the bound (honest encoder).
        WraparoundRetry: ``max_tries`` randomness draws all failed the wraparound checks.
    """
    vdaf = config.vdaf
    for _ in range(max_tries):
        report_id = os.urandom(REPORT_ID_BYTES)
        nonce = report_nonce(config, round_id, client, report_id)
        try:
            public, shares = vdaf.shard_encoded(gradient, nonce, os.urandom(vdaf.rand_size), encoder=encoder)
        except WraparoundRetry:
            continue
        public_bytes = public.to_bytes()
        sealed = seal_helper_share(config, round_id, client, report_id, public_bytes, shares[1].to_bytes(vdaf))
        return Report(round_id, client, report_id, public_bytes, shares[0].to_bytes(vdaf), sealed)
    raise WraparoundRetry(f"no passing wraparound randomness in {max_tries} tries")


class VerifyClient:
    """One client of a verified-aggregation round (see the module docstring).

    Args:
        config: the round's config (shared with the aggregators).
        client: this client's id (what the leader addresses it by).
    """

    __slots__ = ("config", "client", "_last_round", "_gradient")

    def __init__(self, config: VerifyConfig, client: int) -> None:
        if not isinstance(config, VerifyConfig):
            raise TypeError(f"config must be a VerifyConfig, got {type(config).__name__}")
        if isinstance(client, bool) or not isinstance(client, int) or not 0 <= client < 1 << 64:
            raise ValueError(f"client must be an integer in [0, 2^64), got {client!r}")
        self.config = config
        self.client = client
        self._last_round: int | None = None
        self._gradient: np.ndarray | None = None

    @property
    def last_round(self) -> int | None:
        """The last round this client reported in (``None`` before its first report)."""
        return self._last_round

    def __repr__(self) -> str:
        return f"VerifyClient(client={self.client}, last_round={self._last_round}, input={'set' if self._gradient is not None else 'none'})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a VerifyClient may hold an input and is not pickled; use to_state_bytes()")

    # ------------------------------------------------------------------ input
    def set_input(self, vector: np.ndarray, weight: float = 1.0) -> None:
        """The flat float vector to report next (clipped and encoded now).

        Args:
            vector: 1-D float32/float64 of the spec's length.
            weight: in ``(0, config.max_weight]``; the client contributes ``w/M * clip(x)``.

        Raises:
            SpecMismatchError: wrong length, shape or dtype.
            EncodingError: NaN or infinite entries, a weight out of range, or (``clip=False``)
                a norm above the bound.
        """
        c = self.config
        c.spec.check_vector(vector)
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating)):
            raise EncodingError(f"weight must be a number, got {type(weight).__name__}")
        w = float(weight)
        if not (0.0 < w <= c.max_weight):
            raise EncodingError(f"weight must be in (0, max_weight={c.max_weight}], got {weight!r}")
        ints = encode_vector(
            vector,
            bound=c.l2_norm_bound,
            frac_bits=c.params.num_frac_bits,
            bound_int=c.bound,
            weight=w / c.max_weight,
            clip=c.clip,
        )
        self._gradient = to_field(c.params.field, ints)

    def set_tensors(self, tensors: Mapping[str, Any], weight: float = 1.0) -> None:
        """:meth:`set_input` of a mapping of tensors laid out by the config's spec."""
        self.set_input(self.config.spec.flatten(tensors), weight)

    # ------------------------------------------------------------------ messages
    def handle(self, message: UploadRequest | bytes | bytearray | memoryview) -> Report:
        """Answer the leader's upload request with this round's report.

        Raises:
            MalformedMessageError: bytes that do not decode.
            UnexpectedMessageError: another message type, another client's request, or a
                round at or before the last one reported (a replay).
            LocalProtocolError: no input was set.
        """
        decoded = decode_message(message, self.config) if isinstance(message, (bytes, bytearray, memoryview)) else message
        if not isinstance(decoded, UploadRequest):
            raise UnexpectedMessageError(f"a client accepts only UploadRequest, got {type(decoded).__name__}", party=self.client, stage=Stage.UPLOAD)
        message = decoded
        if message.client != self.client:
            raise UnexpectedMessageError(
                f"request addressed to client {message.client}", party=self.client, round=message.round_id, stage=Stage.UPLOAD
            )
        if self._last_round is not None and message.round_id <= self._last_round:
            raise UnexpectedMessageError(
                f"a request for round {message.round_id}; this client reported in round {self._last_round}",
                party=self.client,
                round=message.round_id,
                stage=Stage.UPLOAD,
            )
        if self._gradient is None:
            raise LocalProtocolError("no input: call set_input first", party=self.client, round=message.round_id, stage=Stage.UPLOAD)
        report = make_report(self.config, message.round_id, self.client, self._gradient)
        self._last_round = message.round_id
        self._gradient = None
        return report

    # ------------------------------------------------------------------ state
    def to_state_bytes(self) -> bytes:
        """Magic, version, config digest, client id, the last round reported (the input is
        not kept: give it again after restoring)."""
        last = b"\x00" if self._last_round is None else b"\x01" + struct.pack(">Q", self._last_round)
        return _STATE_MAGIC + bytes([_STATE_VERSION]) + self.config.digest() + struct.pack(">Q", self.client) + last

    @classmethod
    def from_state_bytes(cls, data: bytes, *, config: VerifyConfig) -> "VerifyClient":
        """Strict inverse of :meth:`to_state_bytes` under the same config.

        Raises:
            MalformedMessageError: bad magic, version, flag, or truncated/trailing bytes.
            ContextMismatchError: the state was made under another config.
        """
        reader = Reader(data, "VerifyClient state")
        if reader.take(4) != _STATE_MAGIC:
            raise reader.error("bad magic")
        version = reader.u8()
        if version != _STATE_VERSION:
            raise reader.error(f"unsupported version {version}")
        if not hmac.compare_digest(reader.take(32), config.digest()):
            raise ContextMismatchError("the client state was made under another round config")
        client = reader.u64()
        flag = reader.u8()
        if flag > 1:
            raise reader.error(f"presence byte {flag}")
        last = reader.u64() if flag else None
        reader.expect_end()
        out = cls(config, client)
        out._last_round = last
        return out
