"""The threshold-CKKS server: :class:`ThresholdServer` (key chain relay), :class:`ThresholdSum`
(streaming encrypted sum) and :class:`ThresholdDecryption` (share collection and fusion).

Invariants: the server never holds a key share; every handler validates all of its input
before it changes state; fusion needs a share for each of the ``n`` key shares (or a
stand-in's, t-of-n).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import struct
from typing import Any, Iterable, Sequence

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.errors import (
    ContextMismatchError,
    DecryptionError,
    EncodingError,
    LocalProtocolError,
    MalformedMessageError,
    OverflowRiskError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)

from . import _runtime as _rt
from ._blob import BlobHeader, decode_blob, encode_blob
from ._common import SESSION_BYTES, as_bytes, check_int, check_weight, load_ciphertexts, session_fingerprint
from .messages import BlobKind, DecryptionShare, KeyShareMessage, RosterMessage, Stage
from .params import ThresholdParams

__all__ = ["ThresholdServer", "ThresholdSum", "ThresholdDecryption", "fuse_partials"]


class ThresholdServer:
    """The server: relays the key chain, sums uploads, collects shares, fuses.

    Math: see the module docstring. The server never holds a key share; it learns the
    aggregate when it fuses the ``n`` shares (as in plain FedAvg), nothing about an upload.

    Dropouts: the threshold key is an ``n``-of-``n`` additive sharing. Clients that drop
    before uploading only leave the sum. A key holder that drops before key generation
    completes ends the session (start a new one). A key holder that drops before it sends
    its decryption share:

    * without ``recovery_threshold`` (the default): nobody can decrypt the aggregate; the
      server aborts the decryption with :class:`~fedcrypt.errors.RoundAbortedError`
      (:meth:`ThresholdDecryption.mark_dropped`; nothing is decrypted);
    * with ``recovery_threshold = t`` (OpenFHE's "threshold FHE with aborts", Asharov et al.
      2012 section 5 as cited by OpenFHE, ``ShareKeys`` / ``RecoverSharedKey`` with Shamir
      sharing, ``t > n/2``): after key generation every holder Shamir-shares its key share
      among the others (:meth:`KeyHolder.backup_key`, encrypted pairwise under X25519 +
      HKDF + AES-256-GCM; the binding cannot serialise ``DCRTPoly``, so a share travels
      as a one-element OpenFHE ciphertext container). For up to ``n - t`` dropped holders
      a surviving holder collects ``t - 1`` released shares, rebuilds the dropped key share
      and sends its decryption share (:meth:`KeyHolder.recover_share`). Any ``t`` holders
      together can then rebuild every key share: the scheme is t-of-n, not n-of-n.

    Args:
        params: the agreed parameters.
        session: the session id (32 bytes); a fresh random one if ``None``.
    """

    def __init__(self, params: ThresholdParams, session: bytes | None = None) -> None:
        if not isinstance(params, ThresholdParams):
            raise TypeError(f"params must be ThresholdParams, got {type(params).__name__}")
        if session is None:
            session = secrets.token_bytes(SESSION_BYTES)
        if not isinstance(session, bytes) or len(session) != SESSION_BYTES:
            raise ValueError(f"session must be {SESSION_BYTES} bytes")
        self._params = params
        self._session = session
        self._runtime = _rt.runtime(params)
        self._chain: list[KeyShareMessage] = []
        self._joint: KeyShareMessage | None = None
        self._fingerprint: bytes | None = None
        self._key_tag: str | None = None  # the joint key's (public) tag: every upload must carry it

    @classmethod
    def resume(cls, params: ThresholdParams, session: bytes, joint: KeyShareMessage | bytes) -> "ThresholdServer":
        """The server of a session whose key chain ended in ``joint`` (the last holder's
        message): for later rounds of a session, without the chain's other links.

        Raises:
            UnexpectedMessageError: ``joint`` is of another session or not the last holder's.
            MalformedMessageError: it does not decode, or OpenFHE cannot parse the key.
        """
        server = cls(params, session)
        message = joint if isinstance(joint, KeyShareMessage) else KeyShareMessage.from_bytes(as_bytes(joint), params)
        if not hmac.compare_digest(message.session, server._session) or message.party != params.num_parties - 1:
            raise UnexpectedMessageError("the joint key is not the last holder's key of this session", stage=server.stage)
        key = _rt.deserialize(server._runtime, "public_key", message.public_key, "joint key")
        server._joint = message
        server._key_tag = key.GetKeyTag()
        server._fingerprint = session_fingerprint(params, session, message.public_key)
        return server

    @property
    def params(self) -> ThresholdParams:
        """The parameters."""
        return self._params

    @property
    def session(self) -> bytes:
        """The session id."""
        return self._session

    @property
    def stage(self) -> Stage:
        """KEYGEN until the last holder's key arrived, then READY."""
        return Stage.READY if self._joint is not None else Stage.KEYGEN

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of parameters, session and joint key."""
        if self._fingerprint is None:
            raise LocalProtocolError("key generation is not finished", stage=self.stage)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ThresholdServer(parties={self._params.num_parties}, stage={self.stage.name}, links={len(self._chain)})"

    # ------------------------------------------------------------------ key generation
    @property
    def next_key_holder(self) -> int | None:
        """The holder whose key-share message is expected next (``None`` when done)."""
        return None if self._joint is not None else len(self._chain)

    def key_input_for(self, party: int) -> KeyShareMessage | None:
        """What holder ``party`` needs to run its link: holder ``party - 1``'s message."""
        check_int("party", party)
        if party != self.next_key_holder:
            raise LocalProtocolError(f"holder {party} is not next in the key chain", stage=self.stage)
        return self._chain[-1] if self._chain else None

    def receive_key_share(self, data: KeyShareMessage | bytes) -> KeyShareMessage | None:
        """Accept the next link; returns the joint key message once the chain is complete.

        Raises:
            UnexpectedMessageError: wrong session, or not the next holder in the chain.
            MalformedMessageError: does not decode, or OpenFHE cannot parse the key.
        """
        if self._joint is not None:
            raise UnexpectedMessageError("key generation is already finished", stage=self.stage)
        message = data if isinstance(data, KeyShareMessage) else KeyShareMessage.from_bytes(as_bytes(data), self._params)
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("key share from another session", party=message.party, stage=self.stage)
        if message.party != len(self._chain):
            raise UnexpectedMessageError(
                f"key share of holder {message.party}, expected holder {len(self._chain)}",
                party=message.party,
                stage=self.stage,
            )
        key = _rt.deserialize(self._runtime, "public_key", message.public_key, "key share")
        # ---- apply
        self._chain.append(message)
        if len(self._chain) == self._params.num_parties:
            self._joint = message
            self._key_tag = key.GetKeyTag()
            self._fingerprint = session_fingerprint(self._params, self._session, message.public_key)
        return self._joint

    def roster_message(self) -> RosterMessage:
        """Every holder's transport key (parameters with a ``recovery_threshold`` only)."""
        if self._joint is None or len(self._chain) != self._params.num_parties:
            raise LocalProtocolError("key generation is not finished (or this server resumed a session)", stage=self.stage)
        if not self._params.recovery_threshold:
            raise LocalProtocolError("these parameters have no recovery_threshold (n-of-n)")
        return RosterMessage(self._session, tuple(m.transport_key for m in self._chain))

    def joint_key_message(self) -> KeyShareMessage:
        """The joint public key, to broadcast to every key holder and client."""
        if self._joint is None:
            raise LocalProtocolError("key generation is not finished", stage=self.stage)
        return self._joint

    # ------------------------------------------------------------------ aggregation
    def start(self, *, length: int | None = None) -> "ThresholdSum":
        """A new streaming weighted sum."""
        return ThresholdSum(self, length)

    def weighted_sum(self, uploads: Iterable[bytes | tuple[bytes, float]]) -> bytes:
        """The aggregate blob of ``uploads`` (each already weighted by its client).

        Args:
            uploads: upload blobs, or ``(blob, weight)`` pairs whose ``weight`` must equal
                the weight the client encrypted with (see :meth:`ThresholdSum.add`).
        """
        total = self.start()
        for item in uploads:
            if isinstance(item, tuple):
                total.add(*item)
            else:
                total.add(item)
        return total.finish()

    def start_decryption(self, aggregate: bytes) -> "ThresholdDecryption":
        """Collect the key holders' shares of ``aggregate`` and fuse them."""
        return ThresholdDecryption(self, aggregate)


class ThresholdSum:
    """A streaming encrypted weighted sum (server memory: one accumulator).

    Every upload is ``Enc(w_i clip(x_i))``, weighted by its client; the sum is
    ``sum_i ct_i`` (``EvalAdd``) and the total weight ``sum_i w_i`` of the claimed weights.
    """

    def __init__(self, server: ThresholdServer, length: int | None) -> None:
        self._params = server.params
        self._runtime = server._runtime
        self._fingerprint = server.fingerprint
        self._key_tag = server._key_tag
        self._length = length
        self._acc: list[Any] | None = None
        self._count = 0
        self._weights: list[float] = []
        self._seen: set[bytes] = set()
        self._done = False

    @classmethod
    def under(cls, params: ThresholdParams, fingerprint: bytes, key_tag: str, *, length: int | None = None) -> "ThresholdSum":
        """A sum under the joint key of ``fingerprint`` and ``key_tag`` (:attr:`KeyHolder.key_tag`):
        for a key holder that sums the uploads it decrypts itself (it holds the key, not a server)."""
        if not isinstance(params, ThresholdParams):
            raise TypeError(f"params must be ThresholdParams, got {type(params).__name__}")
        if not isinstance(fingerprint, bytes) or len(fingerprint) != 32:
            raise ValueError("fingerprint must be 32 bytes")
        if not isinstance(key_tag, str) or not key_tag:
            raise ValueError("key_tag must be the joint key's tag (a non-empty str)")
        total = cls.__new__(cls)
        total._params, total._runtime, total._fingerprint, total._length = params, _rt.runtime(params), fingerprint, length
        total._key_tag = key_tag
        total._acc, total._count, total._weights, total._seen, total._done = None, 0, [], set(), False
        return total

    @property
    def count(self) -> int:
        """Uploads added so far."""
        return self._count

    @property
    def total_weight(self) -> float:
        """The summed weights of the uploads added so far."""
        return math.fsum(self._weights)

    @property
    def length(self) -> int | None:
        """Values per upload (None until the first upload, unless given)."""
        return self._length

    def copy(self) -> "ThresholdSum":
        """An independent copy of this (unfinished) sum: adding to one leaves the other as it
        was (every operation makes new ciphertexts, so the two share the current ones)."""
        if self._done:
            raise LocalProtocolError("this sum is finished", stage="finished")
        twin = ThresholdSum.__new__(ThresholdSum)
        twin._params, twin._runtime, twin._fingerprint, twin._key_tag = self._params, self._runtime, self._fingerprint, self._key_tag
        twin._length, twin._acc, twin._count, twin._done = self._length, None if self._acc is None else list(self._acc), self._count, False
        twin._weights, twin._seen = list(self._weights), set(self._seen)
        return twin

    def __repr__(self) -> str:
        return f"ThresholdSum(count={self._count}, total_weight={self.total_weight}, length={self._length})"

    def add(self, blob: bytes, weight: float | None = None) -> None:
        """Add an upload (already weighted by its client); validates before touching the sum.

        Args:
            blob: the upload.
            weight: the weight the server expects this client to have used (its
                ``num_examples``, say); ``None`` accepts the weight in the upload's header.

        Raises:
            TypeError / ValueError: ``weight`` is not a number in ``(0, max_weight]``.
            ProtocolViolationError: the upload was encrypted with another weight.
            OverflowRiskError: already ``num_clients`` uploads.
            ContextMismatchError: under another key.
            MalformedMessageError: does not decode.
            UnexpectedMessageError: the same upload twice (replay).
            LocalProtocolError: the sum is finished.
        """
        if self._done:
            raise LocalProtocolError("this sum is finished; start a new one", stage="finished")
        params = self._params
        expected = None if weight is None else check_weight(weight, params)
        if self._count >= params.num_clients:
            raise OverflowRiskError(f"the sum already has num_clients={params.num_clients} uploads")
        header, pieces = decode_blob(blob, params, self._fingerprint, (BlobKind.UPLOAD,))
        if self._length is not None and header.length != self._length:
            raise EncodingError(f"upload has {header.length} values, the sum has {self._length}")
        if expected is not None and header.total_weight != expected:
            raise ProtocolViolationError(f"the upload was encrypted with weight {header.total_weight!r}, the server expects {expected!r}")
        tag = hashlib.sha256(as_bytes(blob)).digest()
        if tag in self._seen:
            raise UnexpectedMessageError("this upload was already added (replay)")
        runtime = self._runtime
        cts = load_ciphertexts(runtime, pieces, params, elements=2, what="upload", key_tag=self._key_tag)
        context = runtime.context
        try:
            if self._acc is not None:
                summed = [context.EvalAdd(acc, ct) for acc, ct in zip(self._acc, cts)]
            else:
                summed = cts
        except Exception:
            raise ContextMismatchError("OpenFHE refuses to add this upload (another crypto context)") from None
        # ---- apply
        self._acc = summed
        self._length = header.length
        self._count += 1
        self._weights.append(header.total_weight)
        self._seen.add(tag)

    def merge(self, other: "ThresholdSum") -> None:
        """Add the uploads of ``other`` (a sum under the same key) to this sum.

        Validate, then apply: both sums are left as they were on an error, ``other`` is
        finished on success. For a key holder that checks a batch of uploads into a sum of
        its own before it commits them to its running sum. ``EvalAdd`` is addition mod
        ``q``, exact and associative, so merging batches gives the same ciphertexts, bit for
        bit, as adding the uploads one by one in the same order.

        Raises:
            ContextMismatchError: another key, or OpenFHE refuses to add the sums.
            EncodingError: another length.
            UnexpectedMessageError: an upload in both sums (replay).
            OverflowRiskError: more than ``num_clients`` uploads together.
            LocalProtocolError: either sum is finished, or ``other`` is empty.
        """
        if not isinstance(other, ThresholdSum):
            raise TypeError(f"merge takes a ThresholdSum, got {type(other).__name__}")
        if self._done or other._done or other is self:
            raise LocalProtocolError("a finished sum (or the sum itself) cannot be merged", stage="finished")
        if other._acc is None:
            raise LocalProtocolError("the sum to merge is empty", stage="empty")
        if other._params != self._params or not hmac.compare_digest(other._fingerprint, self._fingerprint) or other._key_tag != self._key_tag:
            raise ContextMismatchError("the sum to merge was made under another threshold key")
        if self._length is not None and other._length != self._length:
            raise EncodingError(f"the sum to merge has {other._length} values, this sum {self._length}")
        if not self._seen.isdisjoint(other._seen):
            raise UnexpectedMessageError("an upload is in both sums (replay)")
        if self._count + other._count > self._params.num_clients:
            raise OverflowRiskError(f"the sums together exceed num_clients={self._params.num_clients} uploads")
        summed = other._acc
        if self._acc is not None:
            try:
                summed = [self._runtime.context.EvalAdd(acc, ct) for acc, ct in zip(self._acc, other._acc)]
            except Exception:
                raise ContextMismatchError("OpenFHE refuses to add the sums (another crypto context)") from None
        # ---- apply
        self._acc, self._length = summed, other._length
        self._count += other._count
        self._weights += other._weights
        self._seen |= other._seen
        other._done, other._acc, other._weights = True, None, []

    def to_state_bytes(self) -> bytes:
        """A snapshot of the running sum, to go on adding after :meth:`resume`.

        For a key holder that sums in several messages and keeps its state between them
        (a set of uploads streamed in parts): the aggregate so far, the weights added (in
        order, so the total weight is the same ``fsum``) and the SHA-256 of every blob added
        (the replay guard). Public ciphertexts only, but keep the bytes with the node's
        state: :meth:`resume` trusts them as the node's own.

        Layout: u64-sized aggregate blob | u32 count | count float64 weights | count SHA-256 digests, sorted.

        Raises:
            LocalProtocolError: the sum is empty or finished.
        """
        blob = self._aggregate()
        weights = struct.pack(f">I{len(self._weights)}d", len(self._weights), *self._weights)
        return struct.pack(">Q", len(blob)) + blob + weights + b"".join(sorted(self._seen))

    @classmethod
    def resume(cls, params: ThresholdParams, fingerprint: bytes, key_tag: str, state: bytes) -> "ThresholdSum":
        """The running sum of :meth:`to_state_bytes`, under the joint key of ``fingerprint``
        and ``key_tag`` (as :meth:`under`), to add further uploads to.

        Raises:
            MalformedMessageError: bytes that do not decode, counts that contradict each
                other, or ciphertexts OpenFHE refuses.
            ContextMismatchError: a sum under another key.
        """
        reader = Reader(as_bytes(state), "threshold sum state")
        blob = reader.sized(1 << 40, "aggregate", width=8)
        count = reader.count(8 + 32, params.num_clients, "weights")
        weights = list(reader.unpack(f">{count}d"))
        seen = [reader.take(32) for _ in range(count)]
        reader.expect_end()
        header, pieces = decode_blob(blob, params, fingerprint, (BlobKind.AGGREGATE,))
        if count != header.contributions or seen != sorted(set(seen)) or math.fsum(weights) != header.total_weight:
            raise MalformedMessageError("threshold sum state: the weights or the replay guard do not match the sum")
        if any(not (math.isfinite(w) and 0 < w <= params.max_weight) for w in weights):
            raise MalformedMessageError("threshold sum state: a weight outside (0, max_weight]")
        total = cls.under(params, fingerprint, key_tag, length=header.length)
        total._acc = load_ciphertexts(total._runtime, pieces, params, elements=2, what="threshold sum state", key_tag=key_tag)
        total._count, total._weights, total._seen = count, weights, set(seen)
        return total

    def finish(self) -> bytes:
        """The aggregate blob; the sum cannot be added to afterwards."""
        blob = self._aggregate()
        self._done = True
        self._acc = None
        return blob

    def _aggregate(self) -> bytes:
        if self._done:
            raise LocalProtocolError("this sum is already finished", stage="finished")
        if self._acc is None or self._length is None:
            raise LocalProtocolError("no upload was added to this sum", stage="empty")
        runtime = self._runtime
        pieces = [_rt.serialize(runtime, ct) for ct in self._acc]
        header = BlobHeader(BlobKind.AGGREGATE, self._fingerprint, self._length, self._count, self.total_weight, len(pieces))
        return encode_blob(header, pieces)


class ThresholdDecryption:
    """Collects one decryption share per key holder for one aggregate, then fuses.

    Shares are folded as they arrive: OpenFHE's CKKS fusion (``MultipartyDecryptFusion``)
    adds the partial decryptions' one polynomial each (``c0 + c1 s_0 + e_0``, ``c1 s_i +
    e_i``) and decodes the sum, and that sum is exact arithmetic mod ``q``, so the running
    sum (``EvalAdd``, ciphertext by ciphertext) fuses to the same values, bit for bit, as all
    ``n`` shares at once; the server keeps one share's worth of partials, not ``n``. A share
    is checked (this session, this aggregate, its key and encoding) before it is added.

    All ``num_parties`` shares are required. :meth:`mark_dropped` with a holder whose share
    has not arrived aborts (:meth:`fuse` then raises
    :class:`~fedcrypt.errors.RoundAbortedError`), unless the parameters have a
    ``recovery_threshold`` ``t`` and at most ``n - t`` holders are gone: then a surviving
    holder stands in for each (:meth:`KeyHolder.recover_share`, fed with ``t - 1``
    :meth:`KeyHolder.release_backup` messages) and its share counts for the dropped one.
    """

    def __init__(self, server: ThresholdServer, aggregate: bytes) -> None:
        params = server.params
        header, pieces = decode_blob(aggregate, params, server.fingerprint, (BlobKind.AGGREGATE,))
        self._server = server
        self._params = params
        self._header = header
        self._digest = hashlib.sha256(as_bytes(aggregate)).digest()
        first = load_ciphertexts(server._runtime, pieces[:1], params, elements=2, what="aggregate", key_tag=server._key_tag)[0]
        self._key_tag, self._encoding = first.GetKeyTag(), first.GetEncodingType()  # what every partial carries
        self._received: set[int] = set()
        self._sum: list[Any] | None = None  # the partials received so far, summed ciphertext by ciphertext
        self._dropped: set[int] = set()
        self._standing_in: set[int] = set()

    @property
    def params(self) -> ThresholdParams:
        """The parameters."""
        return self._params

    @property
    def ciphertext_count(self) -> int:
        """Ciphertexts in the aggregate (each share holds one partial per ciphertext)."""
        return self._header.count

    @property
    def total_weight(self) -> float:
        """The aggregate's total weight (the sum of the weights its uploads claim)."""
        return self._header.total_weight

    @property
    def contributions(self) -> int:
        """How many uploads the aggregate sums."""
        return self._header.contributions

    @property
    def missing(self) -> tuple[int, ...]:
        """Holders whose share has not arrived."""
        return tuple(p for p in range(self._params.num_parties) if p not in self._received)

    @property
    def standing_in(self) -> tuple[int, ...]:
        """Dropped holders whose share a stand-in must deliver (t-of-n)."""
        return tuple(sorted(self._standing_in))

    @property
    def aborted(self) -> bool:
        """Whether a holder dropped before sending its share."""
        return bool(self._dropped)

    def __repr__(self) -> str:
        return f"ThresholdDecryption(received={sorted(self._received)}, dropped={sorted(self._dropped)})"

    def receive_share(self, data: DecryptionShare | bytes) -> None:
        """Accept one holder's share.

        Raises:
            RoundAbortedError: the decryption was aborted.
            UnexpectedMessageError: wrong session or aggregate, or a second share of a holder.
            MalformedMessageError: does not decode or OpenFHE cannot parse it.
        """
        if self._dropped:
            raise RoundAbortedError("the decryption was aborted after a dropout", stage="decrypt")
        count = self._header.count
        share = data if isinstance(data, DecryptionShare) else DecryptionShare.from_bytes(data, self._params, ciphertext_count=count)
        if len(share.partials) != count:
            raise MalformedMessageError(f"decryption share: {len(share.partials)} partials, expected {count}")
        if not 0 <= share.party < self._params.num_parties:
            raise MalformedMessageError(f"decryption share: party {share.party} out of range")
        if not hmac.compare_digest(share.session, self._server.session):
            raise UnexpectedMessageError("decryption share from another session", party=share.party)
        if not hmac.compare_digest(share.aggregate_digest, self._digest):
            raise UnexpectedMessageError("decryption share of another aggregate", party=share.party)
        if share.party in self._received:
            raise UnexpectedMessageError("a second decryption share from this holder", party=share.party)
        runtime = self._server._runtime
        partials = load_ciphertexts(runtime, share.partials, self._params, elements=1, what="decryption share")
        if any(p.GetKeyTag() != self._key_tag or p.GetEncodingType() != self._encoding for p in partials):
            raise MalformedMessageError("decryption share: a partial is not of the aggregate's key or encoding")
        if self._sum is not None:
            try:  # a new list: a share OpenFHE refuses to add leaves the running sum as it was
                partials = [runtime.context.EvalAdd(p, total) for p, total in zip(partials, self._sum)]
            except Exception:
                raise MalformedMessageError("decryption share: OpenFHE cannot add it to the others") from None
        # ---- apply
        self._received.add(share.party)
        self._sum = partials

    def mark_dropped(self, parties: Iterable[int]) -> None:
        """Declare holders gone; if one of them has not sent its share, abort.

        Raises:
            RoundAbortedError: a dropped holder's share is missing (n-of-n: nobody can
                decrypt this aggregate any more).
        """
        gone = {check_int("party", p) for p in parties}
        bad = [p for p in gone if not 0 <= p < self._params.num_parties]
        if bad:
            raise ValueError(f"unknown key holders {sorted(bad)}")
        lost = sorted(p for p in gone if p not in self._received)
        n, t = self._params.num_parties, self._params.recovery_threshold
        if lost and t and len(self._standing_in | set(lost)) <= n - t:
            # t-of-n: surviving holders stand in (KeyHolder.recover_share); the stand-in's
            # share arrives with the dropped holder's index.
            self._standing_in.update(lost)
            return
        if lost:
            self._dropped.update(lost)
            raise RoundAbortedError(
                f"key holders {lost} dropped before their decryption share; with {n} key holders and "
                f"recovery_threshold={t} at most {n - t if t else 0} may be stood in for, the aggregate cannot be "
                f"decrypted",
                stage="decrypt",
            )

    def fuse(self) -> np.ndarray:
        """Fuse all shares into the float64 weighted sum of the uploads.

        Raises:
            RoundAbortedError: a share is missing or a holder dropped.
            DecryptionError: OpenFHE cannot decode the fused result.
        """
        if self._dropped or self.missing:
            raise RoundAbortedError(
                f"decryption needs all {self._params.num_parties} shares; missing {list(self.missing)}",
                stage="decrypt",
            )
        assert self._sum is not None
        return fuse_partials(self._server._runtime, self._params, [self._sum], self._header.length)


def fuse_partials(runtime: Any, params: ThresholdParams, shares: Sequence[Sequence[Any]], length: int) -> np.ndarray:
    """OpenFHE fusion of the given partial decryptions (one list per holder, or one list of
    their sums: fusion adds them), decoded and divided by ``2^params.headroom_bits()`` (the
    uploads' precision factor).

    This does not check that every holder contributed (``ThresholdDecryption`` does):
    with fewer shares the fused value is ``c0 + c1 * (part of s)``, a uniformly random
    polynomial to anyone without the missing shares, and decoding fails or yields noise.

    Raises:
        DecryptionError: OpenFHE refuses to decode (the approximation error is too high).
    """
    context, per_ct = runtime.context, params.values_per_ciphertext
    complex_packing = params.packing == "complex"
    out = np.empty(length, dtype=np.float64)
    for index in range(len(shares[0])):
        count = min(per_ct, length - index * per_ct)
        try:
            plain = context.MultipartyDecryptFusion([share[index] for share in shares])
            if complex_packing:
                plain.SetLength((count + 1) // 2)
                values = np.asarray(plain.GetCKKSPackedValue(), dtype=np.complex128).view(np.float64)[:count]
            else:
                plain.SetLength(count)
                values = plain.GetRealPackedValue()
        except Exception:
            raise DecryptionError("threshold decryption failed: the fused shares do not decode") from None
        out[index * per_ct : index * per_ct + count] = values
    return np.ldexp(out, -params.headroom_bits())  # exact: undo the uploads' 2^h
