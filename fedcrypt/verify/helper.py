"""The helper of a verified-aggregation round: opens its sealed shares, verifies with the
leader, and releases one noised share of the sum of the accepted reports.

The helper is fed the leader's messages (objects or bytes) and returns its replies:

* :class:`~fedcrypt.verify.messages.PrepareRequest` (one or more batches, indexed 0, 1, ...)
  -> :class:`~fedcrypt.verify.messages.PrepareResponse`: per report, it opens its sealed
  share (bound to config, round, client, report id and public share), runs ``prep_init``
  and answers its prep share, *before* it has seen any of the leader's prep shares;
* :class:`~fedcrypt.verify.messages.AggregateRequest` -> :class:`~fedcrypt.verify.messages.AggregateShare`:
  with the leader's prep shares it decides every report itself (both PINE proofs and the
  joint-randomness check); a report the leader calls accepted and the helper rejects is a
  protocol violation (honest aggregators decide identically); it sums its output shares
  of the accepted reports (re-expanded from its seeds: memory per report is its seeds and
  verifier share, independent of the dimension), adds its half of the noise, and answers.

Invariants:

* one aggregate share per round, of at least ``min_reports`` reports both aggregators
  accepted, and only for a round after every round it released before (``last_released_round``,
  which the helper service persists): a second AggregateRequest, a leader decision that
  differs from the helper's on any report, or a batch out of order or repeated, raises
  :class:`~fedcrypt.errors.UnexpectedMessageError`; a request that would release a sum of
  fewer reports raises :class:`~fedcrypt.errors.RoundAbortedError`; either changes nothing;
* a report id or client seen before in the round is answered ``REPLAY`` and never prepared
  twice;
* the helper's seeds never leave it and never print.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import NoReturn

from fedcrypt.crypto import Secret, X25519KeyPair
from fedcrypt.errors import (
    CryptoError,
    DecryptionError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
    VerificationError,
)

from ._common import open_helper_share, report_nonce, sample_noise, set_digest
from .config import VerifyConfig
from .messages import (
    AggregateRequest,
    AggregateShare,
    Message,
    PrepareRequest,
    PrepareResponse,
    PrepareResult,
    Stage,
    Status,
    decode_message,
)
from .vdaf import InputShare, PrepShare, PrepState, PublicShare

__all__ = ["Helper"]


@dataclass(slots=True, eq=False)
class _Prepared:
    """What the helper keeps of a report it answered OK."""

    client: int
    report_id: bytes
    meas_seed: Secret = field(repr=False)
    state: PrepState = field(repr=False)
    prep_share: PrepShare = field(repr=False)


class Helper:
    """The helper aggregator of one round (see the module docstring).

    Args:
        config: the round's config; ``config.helper_key`` must be ``key_pair``'s public key.
        verify_key: the 32-byte verification key shared with the leader.
        key_pair: the helper's X25519 key pair (clients seal its shares to the public key).
        round_id: the round id.
        last_released_round: the largest round id for which this helper (this key pair,
            config and verification key) ever released an aggregate share, or ``None`` if
            it never did. Required: the helper service persists :attr:`released_round`
            *before* it sends each :class:`~fedcrypt.verify.messages.AggregateShare`, and
            passes the largest value here. Reports are bound to their round (nonce and
            seal), so a round id at or below it is refused: a leader cannot ask a restarted
            helper, or a second worker, to release a round again over a different set of the
            same reports and difference the two sums (one client's vector).

    Raises:
        UnexpectedMessageError: ``round_id <= last_released_round`` (a replayed round).
    """

    __slots__ = ("config", "round_id", "_verify_key", "_key_pair", "_stage", "_next_batch", "_seen_ids", "_seen_clients", "_prepared", "_released")

    def __init__(
        self, config: VerifyConfig, verify_key: bytes, key_pair: X25519KeyPair, *, round_id: int = 0, last_released_round: int | None
    ) -> None:
        if not isinstance(config, VerifyConfig):
            raise TypeError(f"config must be a VerifyConfig, got {type(config).__name__}")
        if not isinstance(verify_key, (bytes, bytearray)) or len(verify_key) != config.vdaf.verify_key_size:
            raise ValueError(f"verify_key must be {config.vdaf.verify_key_size} bytes")
        if not isinstance(key_pair, X25519KeyPair):
            raise TypeError(f"key_pair must be an X25519KeyPair, got {type(key_pair).__name__}")
        if not hmac.compare_digest(key_pair.public_bytes, config.helper_key):
            raise ValueError("key_pair is not the key pair of config.helper_key")
        if isinstance(round_id, bool) or not isinstance(round_id, int) or not 0 <= round_id < 1 << 64:
            raise ValueError(f"round_id must be an integer in [0, 2^64), got {round_id!r}")
        if last_released_round is not None:
            if isinstance(last_released_round, bool) or not isinstance(last_released_round, int):
                raise TypeError("last_released_round must be an int or None")
            if round_id <= last_released_round:
                raise UnexpectedMessageError(
                    f"round {round_id} is not after the last released round {last_released_round} (a replayed round)",
                    party="helper",
                    round=round_id,
                    stage=Stage.PREPARE,
                )
        self.config = config
        self.round_id = round_id
        self._verify_key = bytes(verify_key)
        self._key_pair = key_pair
        self._stage = Stage.PREPARE
        self._next_batch = 0
        self._seen_ids: set[bytes] = set()
        self._seen_clients: set[int] = set()
        self._prepared: list[_Prepared] = []
        self._released = False

    def __repr__(self) -> str:
        return f"Helper(round_id={self.round_id}, stage={self._stage.name}, prepared={len(self._prepared)})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Helper holds its private key and report seeds and is not pickled")

    @property
    def released_round(self) -> int | None:
        """This round's id once its aggregate share is made (persist it before sending the
        share; see ``last_released_round``), else ``None``."""
        return self.round_id if self._released else None

    @property
    def stage(self) -> Stage:
        """PREPARE until the aggregate share is released, then DONE."""
        return self._stage

    def handle(self, message: Message | bytes | bytearray | memoryview) -> PrepareResponse | AggregateShare:
        """Answer one of the leader's messages.

        Raises:
            MalformedMessageError: bytes that do not decode.
            UnexpectedMessageError: another message type, another round, a batch out of
                order or repeated, or a request after the aggregate share (a replay).
            ProtocolViolationError: an AggregateRequest no honest leader sends (other
                reports than those prepared, or a report accepted that fails verification).
            RoundAbortedError: fewer than ``min_reports`` accepted reports.
        """
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = decode_message(message, self.config)
        if self._stage is not Stage.PREPARE:
            raise UnexpectedMessageError(
                "the helper released its aggregate share already (replay)", party="helper", round=self.round_id, stage=self._stage
            )
        if not isinstance(message, (PrepareRequest, AggregateRequest)):
            raise UnexpectedMessageError(f"a helper does not accept {type(message).__name__}", party="helper", round=self.round_id, stage=self._stage)
        if message.round_id != self.round_id:
            raise UnexpectedMessageError(f"a message for round {message.round_id}", party="helper", round=self.round_id, stage=self._stage)
        if isinstance(message, PrepareRequest):
            return self._prepare(message)
        return self._aggregate(message)

    # ------------------------------------------------------------------ prepare
    def _prepare_one(self, entry, ids: set[bytes], clients: set[int]) -> tuple[PrepareResult, _Prepared | None]:
        c = self.config
        if entry.client in clients or entry.report_id in ids:  # public ids
            return PrepareResult(entry.client, entry.report_id, Status.REPLAY), None
        ids.add(entry.report_id)
        clients.add(entry.client)
        try:
            raw = open_helper_share(c, self._key_pair, self.round_id, entry.client, entry.report_id, entry.public_share, entry.sealed_helper_share)
        except DecryptionError:
            return PrepareResult(entry.client, entry.report_id, Status.SEAL), None
        try:
            share = InputShare.from_bytes(raw, c.vdaf, 1)
            public = PublicShare.from_bytes(entry.public_share, c.vdaf)
        except MalformedMessageError:
            return PrepareResult(entry.client, entry.report_id, Status.MALFORMED), None
        nonce = report_nonce(c, self.round_id, entry.client, entry.report_id)
        try:
            state, prep_share = c.vdaf.prep_init(self._verify_key, 1, nonce, public, share)
        except CryptoError:
            return PrepareResult(entry.client, entry.report_id, Status.QUERY), None
        kept = PrepState(c.params.field.zeros(0), state.wr_seed, state.vf_seed)  # the output share is re-expanded
        prepared = _Prepared(entry.client, entry.report_id, Secret(bytes(share.meas_share)), kept, prep_share)
        return PrepareResult(entry.client, entry.report_id, Status.OK, prep_share.to_bytes(c.vdaf)), prepared

    def _prepare(self, message: PrepareRequest) -> PrepareResponse:
        if message.batch != self._next_batch:
            raise UnexpectedMessageError(
                f"batch {message.batch}, expected batch {self._next_batch} (out of order or a replay)",
                party="helper",
                round=self.round_id,
                stage=self._stage,
            )
        if len(self._seen_ids) + len(message.entries) > self.config.max_reports:
            raise ProtocolViolationError(
                f"more than max_reports={self.config.max_reports} reports in the round",
                party="helper",
                round=self.round_id,
                stage=self._stage,
            )
        ids, clients = set(self._seen_ids), set(self._seen_clients)
        results, prepared = [], []
        for entry in message.entries:
            result, kept = self._prepare_one(entry, ids, clients)
            results.append(result)
            if kept is not None:
                prepared.append(kept)
        self._seen_ids, self._seen_clients = ids, clients
        self._prepared.extend(prepared)
        self._next_batch += 1
        return PrepareResponse(self.round_id, message.batch, tuple(results))

    # ------------------------------------------------------------------ aggregate
    def _aggregate(self, message: AggregateRequest) -> AggregateShare:
        c = self.config
        vdaf = c.vdaf
        F = c.params.field
        entries = message.entries
        if len(entries) != len(self._prepared) or any(
            e.client != p.client or not hmac.compare_digest(e.report_id, p.report_id) for e, p in zip(entries, self._prepared)
        ):
            raise ProtocolViolationError(
                "the aggregate request names other reports than those prepared", party="helper", round=self.round_id, stage=self._stage
            )
        accepted: list[_Prepared] = []
        for e, p in zip(entries, self._prepared):
            leader_share = e.decoded_prep_share(c)
            try:
                vdaf.prep_next(p.state, vdaf.prep_shares_to_prep([leader_share, p.prep_share]))
                ok = True
            except VerificationError:
                ok = False
            if e.accepted != ok:  # honest aggregators decide identically
                raise ProtocolViolationError(
                    f"the leader {'accepts' if e.accepted else 'rejects'} client {e.client}'s report, which "
                    f"{'fails' if e.accepted else 'passes'} verification",
                    party="helper",
                    round=self.round_id,
                    stage=self._stage,
                )
            if e.accepted:
                accepted.append(p)
        if len(accepted) < c.min_reports:
            raise RoundAbortedError(
                f"{len(accepted)} reports accepted, fewer than min_reports={c.min_reports}",
                party="helper",
                round=self.round_id,
                stage=self._stage,
            )
        total = F.zeros(c.dimension)
        for p in accepted:
            total = F.add(total, vdaf.helper_meas_share(1, p.meas_seed.reveal(), c.dimension))
        noise = sample_noise(c)
        if noise is not None:
            total = F.add(total, noise)
        digest = set_digest(c, self.round_id, [(p.client, p.report_id) for p in accepted])
        self._prepared = []
        self._released = True
        self._stage = Stage.DONE
        return AggregateShare(self.round_id, len(accepted), digest, F.encode_vec(total))
