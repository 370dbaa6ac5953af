"""The leader of a verified-aggregation round: collects reports, verifies them with the
helper, sums the accepted ones and obtains the (noised) sum.

One round, from the leader's side::

    UPLOAD     leader -> each client     UploadRequest
               client -> leader          Report (leader share in the clear, helper share sealed)
    PREPARE    leader -> helper          PrepareRequest: per report its id, public share, sealed share
               helper -> leader          PrepareResponse: per report a status and the helper's
                                         prep share, made before the helper sees the leader's
    AGGREGATE  leader -> helper          AggregateRequest: the leader's prep shares and decisions
               helper -> leader          AggregateShare: the helper's noised share of the sum

The leader runs ``prep_init`` on each report as it arrives (refusing it before anything is
stored if it is malformed, for another round, from a client not asked, a second report of a
client, or a reused report id), decides each report once the helper's prep share arrives
(both PINE proofs and the joint-randomness check), folds every accepted output share into
one running sum at once and forgets the share, then adds its own half of the noise to its
sum and, with the helper's share, decodes the result.

Invariants:

* :meth:`Leader.receive` checks a message completely before it stores anything; a refused
  message raises a typed error and changes nothing but the report's ``refused`` entry;
* the result is the sum of exactly the reports both aggregators accepted (the helper's set
  digest and count must equal the leader's), at least ``min_reports`` of them, or the
  round ends ABORTED with :class:`~fedcrypt.errors.RoundAbortedError` /
  :class:`~fedcrypt.errors.ProtocolViolationError`;
* a report that fails verification is *rejected* (``report.rejected``, with the check that
  failed), not an error of the round.

Memory: one running sum, plus each pending report's leader share from its arrival until the
helper's answer to its batch; a transport bounds that by sending batches during UPLOAD
(:meth:`Leader.flush`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any, Iterable, NoReturn

import numpy as np

from fedcrypt.errors import (
    CryptoError,
    FedcryptError,
    LocalProtocolError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
    VerificationError,
)

from ._common import report_nonce, sample_noise, set_digest
from .config import VerifyConfig
from .encoding import decode_sum
from .messages import (
    HELPER,
    AggregateRequest,
    AggregateShare,
    LeaderPrep,
    Message,
    PrepareEntry,
    PrepareRequest,
    PrepareResponse,
    Report,
    Stage,
    Status,
    UploadRequest,
    decode_message,
)
from .vdaf import PrepShare, PrepState

__all__ = ["Leader", "AggregationResult", "RoundReport"]


@dataclass(frozen=True, slots=True, eq=False)
class AggregationResult:
    """The outcome of a round.

    Attributes:
        sum: ``sum_i w_i/M * x_i`` over the accepted reports, after fixed-point rounding, plus
            the noise (float64, ``d`` entries).
        count: how many reports are in the sum.
        accepted: their clients, in the order the leader received them.
        noise_stddev: the standard deviation of the noise in ``sum`` (floats; 0 without noise).
        l2_sensitivity: what one client can change ``sum`` by in L2 (the verified bound, in floats).
    """

    sum: np.ndarray = field(repr=False)
    count: int
    accepted: tuple[int, ...]
    noise_stddev: float
    l2_sensitivity: float
    _event_args: tuple[float, float, float, int] = field(repr=False)

    def dp_event(self, *, against: str = "aggregator") -> Any:
        """The round's DpEvent (needs the ``dp`` extra).

        ``against="aggregator"`` (default, conservative): what the sum costs against one
        aggregator, who knows its own half of the noise: a discrete Gaussian of variance
        ``(z B)^2 / 2``. ``against="public"``: against a party that sees only the sum (both
        halves). In the integer domain: L2 sensitivity ``B``, L1 sensitivity
        ``min(B^2, sqrt(d) B)`` (integer coordinates).

        Raises:
            ValueError: no noise was added, or ``against`` is neither value.
        """
        if against not in ("aggregator", "public"):
            raise ValueError(f"against must be 'aggregator' or 'public', got {against!r}")
        l2, l1, local, dim = self._event_args
        if local == 0.0:
            raise ValueError("this round added no noise (noise_multiplier=0)")
        from fedcrypt.dp.events import DistributedDiscreteGaussianDpEvent

        return DistributedDiscreteGaussianDpEvent(
            l2_sensitivity=l2,
            l1_sensitivity=l1,
            local_stddev=local,
            num_clients=1 if against == "aggregator" else 2,
            dimension=dim,
        )

    def __repr__(self) -> str:
        return f"AggregationResult(count={self.count}, length={self.sum.shape[0]}, noise_stddev={self.noise_stddev:g})"


@dataclass
class RoundReport:
    """What happened in one round (public information only).

    Attributes:
        round: the round id.
        clients: the round's clients, increasing.
        received: clients whose report the leader took, in arrival order.
        accepted: clients whose report is in the sum.
        rejected: client -> why its report was rejected (the failed check, or the helper's status).
        dropped: client -> the stage it stopped answering in.
        refused: client (or ``"helper"``) -> why its last refused message was refused.
        aborted: ``"ErrorType: why"`` when the round ended without a result, else ``None``.
    """

    round: int
    clients: list[int]
    received: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int | str, str] = field(default_factory=dict)
    aborted: str | None = None


@dataclass(slots=True, eq=False)
class _Pending:
    """A report between its arrival and its decision."""

    client: int
    report_id: bytes
    public_share: bytes = field(repr=False)
    sealed: bytes = field(repr=False)
    state: PrepState | None = field(repr=False)
    prep_share: PrepShare = field(repr=False)


def _reason(exc: FedcryptError) -> str:
    return f"{type(exc).__name__}: {exc}"


class Leader:
    """The leader aggregator of one round (see the module docstring).

    Args:
        config: the round's config.
        verify_key: the 32-byte verification key shared with the helper (never with clients).
        clients: the clients asked for a report.
        round_id: the round id (never reuse one with the same config and verify key).
    """

    __slots__ = (
        "config",
        "round_id",
        "clients",
        "_verify_key",
        "_stage",
        "_begun",
        "_asked",
        "_reports",
        "_report_ids",
        "_queue",
        "_batches",
        "_sent",
        "_decided",
        "_sum",
        "_accepted",
        "_result",
        "_report",
    )

    def __init__(self, config: VerifyConfig, verify_key: bytes, clients: Iterable[int], *, round_id: int = 0) -> None:
        if not isinstance(config, VerifyConfig):
            raise TypeError(f"config must be a VerifyConfig, got {type(config).__name__}")
        if not isinstance(verify_key, (bytes, bytearray)) or len(verify_key) != config.vdaf.verify_key_size:
            raise ValueError(f"verify_key must be {config.vdaf.verify_key_size} bytes")
        if isinstance(round_id, bool) or not isinstance(round_id, int) or not 0 <= round_id < 1 << 64:
            raise ValueError(f"round_id must be an integer in [0, 2^64), got {round_id!r}")
        ids = list(clients)
        if any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 1 << 64 for c in ids):
            raise ValueError("clients must be integers in [0, 2^64)")
        if not ids or len(set(ids)) != len(ids):
            raise ValueError("clients must be distinct, and at least one")
        if len(ids) > config.max_reports:
            raise ValueError(f"{len(ids)} clients exceed max_reports={config.max_reports}")
        self.config = config
        self.round_id = round_id
        self.clients = tuple(sorted(ids))
        self._verify_key = bytes(verify_key)
        self._stage = Stage.UPLOAD
        self._begun = False
        self._asked: set[int] = set()
        self._reports: dict[int, bytes] = {}  # client -> report id, every report taken
        self._report_ids: set[bytes] = set()
        self._queue: list[_Pending] = []  # taken, not yet sent to the helper
        self._batches: dict[int, list[_Pending]] = {}  # sent, awaiting the helper's answer
        self._sent = 0  # batches sent so far (the next batch's index)
        self._decided: list[tuple[_Pending, bool]] = []  # answered OK by the helper, decided
        self._sum = config.params.field.zeros(config.dimension)
        self._accepted: list[tuple[int, bytes]] = []
        self._result: AggregationResult | None = None
        self._report = RoundReport(round=round_id, clients=list(self.clients))

    def __repr__(self) -> str:
        return (
            f"Leader(round_id={self.round_id}, stage={self._stage.name}, clients={len(self.clients)}, "
            f"received={len(self._reports)}, accepted={len(self._accepted)})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Leader holds the verification key and report shares and is not pickled")

    # ------------------------------------------------------------------ properties
    @property
    def stage(self) -> Stage:
        """The stage whose messages the leader is collecting."""
        return self._stage

    @property
    def report(self) -> RoundReport:
        """What happened so far (public information only)."""
        return self._report

    @property
    def result(self) -> AggregationResult:
        """The outcome, once the round is DONE."""
        if self._result is None:
            raise LocalProtocolError("the round has no result yet", party="leader", round=self.round_id, stage=self._stage)
        return self._result

    # ------------------------------------------------------------------ stages
    def begin(self) -> dict[int, UploadRequest]:
        """The upload request of every client."""
        if self._begun:
            raise LocalProtocolError("the round has begun already", party="leader", round=self.round_id, stage=self._stage)
        self._begun = True
        self._asked = set(self.clients)
        return {c: UploadRequest(self.round_id, c) for c in self.clients}

    def receive(self, message: Message | bytes | bytearray | memoryview, *, sender: int | str | None = None) -> None:
        """Take one client's report or the helper's answer (object or bytes).

        Args:
            message: the message.
            sender: who the transport received it from (a client id, or ``"helper"``); with
                it, a report must name that client, and undecodable bytes are reported
                against the sender.

        Raises:
            MalformedMessageError: bytes that do not decode.
            UnexpectedMessageError: wrong stage, type, round, client or batch; a client not
                asked; a second report of a client or a reused report id (a replay).
            ProtocolViolationError: a helper answer no honest helper sends (wrong reports,
                a set or count other than the leader's).
            LocalProtocolError: called before :meth:`begin` or after the round ended.
        """
        if not self._begun or self._stage in (Stage.DONE, Stage.ABORTED):
            raise LocalProtocolError("no stage is open", party="leader", round=self.round_id, stage=self._stage)
        who: int | str | None = sender
        try:
            if isinstance(message, (bytes, bytearray, memoryview)):
                message = decode_message(message, self.config)
            if isinstance(message, Report):
                who = message.client if sender is None else sender
                self._on_report(message, sender)
            elif isinstance(message, PrepareResponse):
                who = HELPER
                self._on_prepare_response(message)
            elif isinstance(message, AggregateShare):
                who = HELPER
                self._on_aggregate_share(message)
            else:
                raise UnexpectedMessageError(f"a leader does not accept {type(message).__name__}", round=self.round_id, stage=self._stage)
        except FedcryptError as exc:
            if who is not None:
                self._report.refused[who] = _reason(exc)
            raise
        if who is not None:
            self._report.refused.pop(who, None)

    def flush(self) -> PrepareRequest | None:
        """During UPLOAD: a PrepareRequest for the reports taken since the last one (``None``
        when there are none), so their shares can be decided and released early."""
        if self._stage is not Stage.UPLOAD or not self._begun:
            raise LocalProtocolError("flush is for the UPLOAD stage", party="leader", round=self.round_id, stage=self._stage)
        return self._send_batch()

    def end_stage(self) -> dict[int | str, Message]:
        """Close the current stage; the next messages by recipient (a client id or ``"helper"``);
        ``{}`` once the round is DONE.

        Raises:
            RoundAbortedError: fewer than ``min_reports`` reports left (the stage moves to ABORTED).
            ProtocolViolationError: the helper did not answer a batch or the aggregate.
            LocalProtocolError: called before :meth:`begin` or after the round ended.
        """
        if not self._begun or self._stage in (Stage.DONE, Stage.ABORTED):
            raise LocalProtocolError("no stage is open", party="leader", round=self.round_id, stage=self._stage)
        if self._stage is Stage.UPLOAD:
            for client in sorted(self._asked - set(self._reports)):
                self._report.dropped.setdefault(client, Stage.UPLOAD.name)
            self._check_enough(len(self._reports) - len(self._report.rejected), "reports received")
            self._stage = Stage.PREPARE
            batch = self._send_batch()
            return {HELPER: batch} if batch is not None else self._end_prepare()
        if self._stage is Stage.PREPARE:
            return self._end_prepare()
        if self._result is not None:
            self._stage = Stage.DONE
            return {}
        raise self._abort(ProtocolViolationError("the helper sent no aggregate share", party=HELPER, round=self.round_id, stage=self._stage))

    # ------------------------------------------------------------------ upload
    def _on_report(self, report: Report, sender: int | str | None) -> None:
        stage = Stage.UPLOAD
        c = report.client
        if self._stage is not stage:
            raise UnexpectedMessageError("a report outside UPLOAD", party=c, round=self.round_id, stage=self._stage)
        if sender is not None and sender != c:
            raise UnexpectedMessageError(f"a report naming client {c} came from {sender}", party=sender, round=self.round_id, stage=stage)
        if report.round_id != self.round_id:
            raise UnexpectedMessageError(f"a report for round {report.round_id}", party=c, round=self.round_id, stage=stage)
        if c not in self._asked:
            raise UnexpectedMessageError("a report from a client that was not asked", party=c, round=self.round_id, stage=stage)
        if c in self._reports:
            raise UnexpectedMessageError("a second report of this client (replay)", party=c, round=self.round_id, stage=stage)
        if report.report_id in self._report_ids:  # public ids: a set, not a constant-time scan
            raise UnexpectedMessageError("a report id already used in this round (replay)", party=c, round=self.round_id, stage=stage)
        vdaf = self.config.vdaf
        public = report.decoded_public_share(self.config)
        share = report.decoded_leader_share(self.config)
        nonce = report_nonce(self.config, self.round_id, c, report.report_id)
        try:
            state, prep_share = vdaf.prep_init(self._verify_key, 0, nonce, public, share)
        except CryptoError as exc:  # the query randomness hit a gadget domain
            state = None
            self._report.rejected[c] = _reason(exc)
        self._reports[c] = report.report_id
        self._report_ids.add(report.report_id)
        self._report.received.append(c)
        if state is None:
            return
        self._queue.append(_Pending(c, report.report_id, report.public_share, report.sealed_helper_share, state, prep_share))

    def _send_batch(self) -> PrepareRequest | None:
        if not self._queue:
            return None
        index = self._sent
        self._sent += 1
        pending, self._queue = self._queue, []
        self._batches[index] = pending
        entries = tuple(PrepareEntry(p.client, p.report_id, p.public_share, p.sealed) for p in pending)
        return PrepareRequest(self.round_id, index, entries)

    # ------------------------------------------------------------------ prepare
    def _on_prepare_response(self, message: PrepareResponse) -> None:
        if self._stage not in (Stage.UPLOAD, Stage.PREPARE):
            raise UnexpectedMessageError("a prepare response outside PREPARE", party=HELPER, round=self.round_id, stage=self._stage)
        if message.round_id != self.round_id:
            raise UnexpectedMessageError(f"a prepare response for round {message.round_id}", party=HELPER, round=self.round_id, stage=self._stage)
        pending = self._batches.get(message.batch)
        if pending is None:
            raise UnexpectedMessageError(
                f"no open batch {message.batch} (unknown or answered: a replay)", party=HELPER, round=self.round_id, stage=self._stage
            )
        results = message.results
        if len(results) != len(pending) or any(
            r.client != p.client or not hmac.compare_digest(r.report_id, p.report_id) for r, p in zip(results, pending)
        ):
            raise ProtocolViolationError("the helper answered other reports than the batch's", party=HELPER, round=self.round_id, stage=self._stage)
        vdaf = self.config.vdaf
        F = self.config.params.field
        helper_shares = [r.decoded_prep_share(self.config) if r.status is Status.OK else None for r in results]
        decisions: list[tuple[_Pending, bool, np.ndarray | None, str | None]] = []
        for p, r, helper_share in zip(pending, results, helper_shares):
            if helper_share is None:
                decisions.append((p, False, None, f"the helper's status {r.status.name}"))
                continue
            assert p.state is not None  # a report keeps its prep state until its batch is decided, just below
            try:
                prep_message = vdaf.prep_shares_to_prep([p.prep_share, helper_share])
                out = vdaf.prep_next(p.state, prep_message)
            except VerificationError as exc:
                decisions.append((p, True, None, _reason(exc)))
                continue
            decisions.append((p, True, out, None))
        # every check passed: commit
        del self._batches[message.batch]
        for p, helper_ok, output, why in decisions:
            if output is not None:
                self._sum = F.add(self._sum, output)
                self._accepted.append((p.client, p.report_id))
                self._report.accepted.append(p.client)
            else:
                assert why is not None  # every decision without an output share carries its reason
                self._report.rejected[p.client] = why
            p.state = None  # the output share is folded or dropped
            if helper_ok:
                self._decided.append((p, output is not None))

    def _end_prepare(self) -> dict[int | str, Message]:
        if self._batches:
            raise self._abort(
                ProtocolViolationError(
                    f"the helper did not answer batch(es) {sorted(self._batches)}", party=HELPER, round=self.round_id, stage=Stage.PREPARE
                )
            )
        self._check_enough(len(self._accepted), "reports accepted")
        entries = tuple(LeaderPrep(p.client, p.report_id, ok, p.prep_share.to_bytes(self.config.vdaf)) for p, ok in self._decided)
        self._stage = Stage.AGGREGATE
        return {HELPER: AggregateRequest(self.round_id, entries)}

    # ------------------------------------------------------------------ aggregate
    def _on_aggregate_share(self, message: AggregateShare) -> None:
        if self._stage is not Stage.AGGREGATE:
            raise UnexpectedMessageError("an aggregate share outside AGGREGATE", party=HELPER, round=self.round_id, stage=self._stage)
        if message.round_id != self.round_id:
            raise UnexpectedMessageError(f"an aggregate share for round {message.round_id}", party=HELPER, round=self.round_id, stage=self._stage)
        if self._result is not None:
            raise UnexpectedMessageError("a second aggregate share (replay)", party=HELPER, round=self.round_id, stage=self._stage)
        expected = set_digest(self.config, self.round_id, self._accepted)
        if message.count != len(self._accepted) or not hmac.compare_digest(message.set_digest, expected):
            raise ProtocolViolationError(
                "the helper summed another set of reports than the leader accepted", party=HELPER, round=self.round_id, stage=self._stage
            )
        c = self.config
        F = c.params.field
        total = F.add(self._sum, message.decoded_share(c))
        noise = sample_noise(c)
        if noise is not None:
            total = F.add(total, noise)
        l2 = float(c.bound)
        dim = c.dimension
        self._result = AggregationResult(
            sum=decode_sum(F, total, c.params.num_frac_bits),
            count=len(self._accepted),
            accepted=tuple(client for client, _ in self._accepted),
            noise_stddev=c.noise_stddev / c.scale,
            l2_sensitivity=c.bound / c.scale,
            _event_args=(l2, min(l2 * l2, dim**0.5 * l2), c.noise_stddev / 2**0.5, dim),
        )
        self._sum = F.zeros(0)

    # ------------------------------------------------------------------ helpers
    def _check_enough(self, count: int, what: str) -> None:
        if count < self.config.min_reports:
            raise self._abort(
                RoundAbortedError(
                    f"{count} {what}, fewer than min_reports={self.config.min_reports}",
                    party="leader",
                    round=self.round_id,
                    stage=self._stage,
                )
            )

    def _abort(self, error: FedcryptError) -> FedcryptError:
        self._stage = Stage.ABORTED
        self._report.aborted = _reason(error)
        self._queue, self._batches = [], {}
        self._sum = self.config.params.field.zeros(0)
        return error
