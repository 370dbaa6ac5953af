"""Attacker review 11: a search for plans against the layout plurality rule (0c902ce).

The change: both round servers (single-key CKKS ``fedcrypt.he.round``, threshold CKKS
``fedcrypt.he.threshold.round``) keep every upload layout ``(layout digest, length)`` apart (no
roster: one running encrypted sum per layout; roster: the uploads in the spill file with their
layout) and at the end of ENCRYPT ``RoundServer._plurality`` makes the layout most uploads name the
round's; the other uploaders are refused, a tie ends the round (``SpecMismatchError``).

Scene: three nodes ``A B C`` = ``100 101 102``, ``min_contributions = 2``, each protocol with and
without a roster. CKKS: ``key_setup="file"`` (every node holds the key), two decryptors. Threshold:
three key holders, 2-of-3 recovery (so one holder gone from ENCRYPT on is stood in for; with
n-of-n any holder missing at DECRYPT ends the round, documented, and says nothing of layouts).
Every round runs real nodes (the harnesses of ``tests/he`` and ``tests/he_threshold``) after an
honest first round (the key / the session); each schedule starts from the nodes' states after it.

**Threat model 1, availability (honest server, one malicious node ``X``).** The search enumerates
every schedule: ``X`` in {A, B, C} (threshold default: B, the middle id; every id in the slow
variant) x ``X``'s upload: ``honest`` layout, ``other-digest`` (another 32-byte digest, same
length), ``other-length`` (the honest digest over a vector of half the length: the API lets a node
name any digest), ``none`` (no upload; answers later stages), ``gone`` (no upload, silent from then
on) x ``X``'s place in the arrival order of the uploads (first, middle, last; one order without an
upload; duplicate orders dropped) x at most one honest node gone from ENCRYPT on (none, either).
A *plan* is a schedule in which the honest uploaders (one layout) are at least
``min_contributions`` and strictly more than ``X``'s group (when ``X`` names another layout), yet
the round does not end DONE with exactly the honest uploaders (plus ``X`` when it used the honest
layout) as contributors, ``result.layout`` the honest digest, and the mean within
``fedavg_error_bound``. *Documented limit* (asserted, not a plan): one honest uploader against
``X``'s other layout (the other honest node gone) is a 1:1 tie and ends the round with
``SpecMismatchError``.

**Threat model 2, correctness / confidentiality.** (a) In every schedule above: a result whose
contributors' uploads name more than one layout, or whose mean is not theirs, is a plan. Without
a roster the server's number of running sums after ENCRYPT is recorded (the memory observation).
(b) *Malicious server, roster*: uploads of ``A``, ``B`` (honest layout) and ``X = C`` (other digest
or other length). Each honest node confirms one set per round: a *world* is the set ``A`` and the
set ``B`` confirm, each any of {A,B}, {A,C}, {A,B,C} / {A,B}, {B,C}, {A,B,C} (9 worlds; the
honest node signs its confirmation, it cannot see other uploads' layouts). ``X`` colludes with the
server: its confirmation of any set is signed under the honest layout and under its own. For
each honest decryptor / key holder (``A``, ``B``) in each world the server sends, from the
decryptor's state after its confirmation: the one-shot ``DecryptRequest`` of every ordered
selection of 1 to 3 uploads and every streamed set (``SumPart 0`` with the entries and a first
batch, then ``DecryptRequest(part=1)`` with the rest, for every ordered set of 2 or 3 and every
split), each with ``X``'s confirmation under either layout. A refused message leaves the node as
it was (checked); after a release the node is rebuilt from the state it started with. A *plan* is
a release (``Decryption`` / ``PartialDecryption``) of a set whose uploads name two layouts, or
that not every honest member in it confirmed, or smaller than ``min_contributions``.

**Positive controls** (the same searches find plans): a server that restores first-come
(``_plurality`` returns the first upload's layout group): ``X`` first with another layout gets the
honest uploads refused; a holder / decryptor with its one-layout check disabled (it checks each
upload's signature and each confirmation under the upload's own layout): it releases
``A+B+C`` with ``C``'s other digest.

Results (the counts are asserted; the runs print them):

* **Availability, real servers: no plan.** CKKS: 81 schedules (X in A, B, C) per roster mode, 162;
  threshold: 27 per mode (X = B), 54 (slow: X in A, B, C, 162). In each mode, per X: 15 rounds
  finish as required (the odd uploader refused in the report, ``result.layout`` the honest digest,
  the mean within the bound), 8 are the documented 1:1 tie (``SpecMismatchError``), 4 have too few
  honest uploads. Without a roster the server holds one running sum per layout named after
  ENCRYPT, never more than the uploads (at most 2 here: the honest one and X's).
* **Correctness, honest server: no plan** (no result mixes layouts or has another mean).
* **Malicious server, roster: no plan.** 18 worlds (9 per X layout) x 2 honest decryptors,
  990 request sequences, 1,062 messages per protocol; the only releases are of ``A+B`` in the world
  where both confirm it (one-shot in either order and streamed). Honest nodes do confirm mixed sets
  (8 of their 12 confirmations per protocol: a confirmation names the confirmer's own layout and
  the set digest, it cannot see the others'); no holder / decryptor decrypts one: the layout digest
  check of the set (``SpecMismatchError``), the confirmation signed under the set's layout
  (``InvalidSignature``) and the sums' length check (``EncodingError`` / ``SpecMismatchError``;
  for CKKS ``EncryptedSum`` checks the digest as well, a second line behind the decryptor's check).
* **Controls found:** first-come server: CKKS 14 plans per mode out of 27 (X = A: every schedule
  where A uploads first with another layout, and the ties that now end otherwise), threshold 2
  per mode (X = B first, other digest / other length); layout-blind decryptor / holder: 36 (CKKS)
  and 52 (threshold) releases of mixed sets, among them ``A+B+C``.
* **Break (fixed in 80e8b6b; the search with ``decryptors=3`` and its witness are regression
  tests now), single-key CKKS without a roster, ``decryptors`` above the number of
  contributors:** the uploader refused by the plurality rule was not dropped (its upload was
  accepted at receipt), so ``CkksServer._start_decrypt`` counted it among the decryptor
  candidates ("holders not in contributors and not dropped") and ``needed = min(decryptors,
  candidates)`` grew with it; the node, honest or not, refuses to decrypt an aggregate whose
  layout digest is not its own upload's (``CkksClient._checked_aggregate``), so with 3 nodes
  and ``decryptors=3`` one node uploading another digest aborted the round ("2 of the 3
  decryptions needed arrived") that A and B finish when it does not upload: 9 plans (X
  anywhere, other digest, nobody gone). A stale honest node is the likely case. Fix: an
  uploader of another layout is no candidate. Threshold CKKS asks every key holder anyway,
  and its holders do not compare the aggregate with their own layout.
* Runtimes (2 shared cores, loaded by other jobs): CPython 3.11 (CKKS) 13 to 40 s wall, 13 s CPU;
  CPython 3.10 (threshold) 48 to 70 s wall, 28 s CPU (two key set-ups of 5 to 10 s wall each);
  the slow variant (threshold, X in A, B, C: 162 schedules, no plan) 43 s wall, 27 s CPU.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import itertools
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from fedcrypt.errors import FedcryptError, HonestButCuriousWarning
from fedcrypt.he._round_common import layout_digest, set_digest

TESTS = Path(__file__).resolve().parents[2]
NODES = (100, 101, 102)
LETTER = {100: "A", 101: "B", 102: "C"}
ODD = hashlib.sha256(b"review11: another layout").digest()
CHOICES = ("honest", "other-digest", "other-length", "none", "gone")
POSITIONS = ("first", "middle", "last")
MIN_CONTRIBUTIONS = 2


def _require_openfhe() -> None:
    if os.environ.get("FEDCRYPT_REQUIRE_OPENFHE") == "1":  # CI's 3.10 run: never skip
        importlib.import_module("openfhe")
    else:
        pytest.importorskip("openfhe", reason="threshold CKKS needs openfhe (CPython 3.10)")


def _require_tenseal() -> None:
    pytest.importorskip("tenseal", reason="single-key CKKS needs tenseal (CPython 3.11)")


# ============================================================================ protocols
class Protocol:
    """One protocol and roster mode: its federation after an honest first round, and how to run the next."""

    name: str
    roster: bool
    fed: Any
    D: int
    Stage: Any
    server_cls: Any
    EncryptRequest: Any
    ConfirmRequest: Any
    DecryptRequest: Any
    SumPart: Any
    ConfirmedUpload: Any
    released_types: tuple[type, ...]
    statements: Any

    def start(self) -> int:  # the nodes as after round 1; the round id to use
        raise NotImplementedError

    def server(self, cls: Any, round_id: int) -> Any:
        raise NotImplementedError

    def bound(self, weights: list[float]) -> float:
        raise NotImplementedError

    def fingerprint(self) -> bytes:
        raise NotImplementedError

    def rebuild(self, node: int, state: bytes, cls: Any = None) -> Any:
        raise NotImplementedError

    def layout_of(self, upload: Any) -> tuple[bytes, int]:
        raise NotImplementedError


class ThresholdProtocol(Protocol):
    def __init__(self, roster: bool) -> None:
        _require_openfhe()
        sys.path.insert(0, str(TESTS / "he_threshold"))
        import _round_harness as harness  # noqa: PLC0415

        from fedcrypt.he.threshold._blob import decode_blob  # noqa: PLC0415
        from fedcrypt.he.threshold.messages import BlobKind  # noqa: PLC0415
        from fedcrypt.he.threshold.round import (  # noqa: PLC0415
            ConfirmedUpload,
            ConfirmRequest,
            DecryptRequest,
            EncryptRequest,
            PartialDecryption,
            Stage,
            SumPart,
            ThresholdClient,
            ThresholdRoundServer,
            _statements,  # noqa: PLC0415
            fedavg_error_bound,
        )

        self.name, self.roster = f"threshold/{'roster' if roster else 'no-roster'}", roster
        self.fed = harness.Federation(roster=roster, recovery=2, min_contributions=MIN_CONTRIBUTIONS, seed=11)
        self.fed.run(1)
        self.saved = self.fed.snapshot()
        self.D, self.M = harness.D, harness.M
        self.Stage, self.server_cls, self.client_cls = Stage, ThresholdRoundServer, ThresholdClient
        self.EncryptRequest, self.ConfirmRequest, self.DecryptRequest = EncryptRequest, ConfirmRequest, DecryptRequest
        self.SumPart, self.ConfirmedUpload = SumPart, ConfirmedUpload
        self.released_types, self.statements = (PartialDecryption,), _statements
        self._bound, self._decode, self._kind = fedavg_error_bound, decode_blob, BlobKind

    def start(self) -> int:
        self.fed.restore(self.saved)
        return 2

    def server(self, cls: Any, round_id: int) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            return cls(self.fed.config, sorted(self.fed.clients), round_id=round_id, session=self.fed.session)

    def bound(self, weights: list[float]) -> float:
        return self._bound(self.fed.config.params, weights, self.M)

    def fingerprint(self) -> bytes:
        return self.fed.clients[100]._holder.fingerprint

    def rebuild(self, node: int, state: bytes, cls: Any = None) -> Any:
        return (cls or self.client_cls).from_state_bytes(state, config=self.fed.config, identity=self.fed.identity(node))

    def layout_of(self, upload: Any) -> tuple[bytes, int]:
        header, _ = self._decode(upload.blob, self.fed.config.params, self.fingerprint(), (self._kind.UPLOAD,))
        return upload.layout, header.length


class CkksProtocol(Protocol):
    def __init__(self, roster: bool, decryptors: int = 2) -> None:
        _require_tenseal()
        from he import _round_harness as harness  # noqa: PLC0415

        from fedcrypt.he import AggregatorContext  # noqa: PLC0415
        from fedcrypt.he.blob import peek_header  # noqa: PLC0415
        from fedcrypt.he.round import (  # noqa: PLC0415
            CkksClient,
            CkksServer,
            ConfirmedUpload,
            ConfirmRequest,
            Decryption,
            DecryptRequest,
            EncryptRequest,
            Stage,
            SumPart,
            _statements,  # noqa: PLC0415
            fedavg_error_bound,
        )

        self.name, self.roster = f"ckks/{'roster' if roster else 'no-roster'}" + (f"/decryptors={decryptors}" if decryptors != 2 else ""), roster
        self.fed = harness.Federation(3, roster=roster, min_contributions=MIN_CONTRIBUTIONS, decryptors=decryptors, key_setup="file", seed=11)
        self.fed.run(1)
        self.saved = {n: c.to_state_bytes() for n, c in self.fed.clients.items()}
        self.D, self.M, self.params = harness.D, harness.MAX_WEIGHT, harness.PARAMS
        self.Stage, self.server_cls, self.client_cls = Stage, CkksServer, CkksClient
        self.EncryptRequest, self.ConfirmRequest, self.DecryptRequest = EncryptRequest, ConfirmRequest, DecryptRequest
        self.SumPart, self.ConfirmedUpload = SumPart, ConfirmedUpload
        self.released_types, self.statements = (Decryption,), _statements
        self._bound, self._peek, self._aggregator = fedavg_error_bound, peek_header, AggregatorContext
        self._round = 1

    def start(self) -> int:
        # CKKS nodes take increasing round ids and release one decryption per upload: a fresh id each time
        self._round += 1
        return self._round

    def server(self, cls: Any, round_id: int) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            return cls(self.fed.config, sorted(self.fed.clients), round_id=round_id, context=self.fed.context)

    def bound(self, weights: list[float]) -> float:
        return self._bound(self.params, weights, self.M)

    def fingerprint(self) -> bytes:
        return self._aggregator.from_bytes(self.fed.context).fingerprint

    def rebuild(self, node: int, state: bytes, cls: Any = None) -> Any:
        return (cls or self.client_cls).from_state_bytes(state, config=self.fed.config, identity=self.fed.identity(node))

    def layout_of(self, upload: Any) -> tuple[bytes, int]:
        header = self._peek(upload.blob)
        return header.spec_digest, header.length


def honest_layout(proto: Protocol) -> bytes:
    return layout_digest(None, proto.D)


def set_input(proto: Protocol, node: int, choice: str) -> tuple[np.ndarray, bytes]:
    """Give ``node`` its round input as ``choice`` says; the plain vector and the digest it names."""
    x = proto.fed.inputs[node]
    if choice == "other-digest":
        proto.fed.clients[node].set_input(x, proto.fed.weights[node], layout=ODD)
        return x, ODD
    if choice == "other-length":
        x = x[: proto.D // 2]
        proto.fed.clients[node].set_input(x, proto.fed.weights[node], layout=honest_layout(proto))
        return x, honest_layout(proto)
    proto.fed.clients[node].set_input(x, proto.fed.weights[node], layout=honest_layout(proto))
    return x, honest_layout(proto)


# ============================================================================ weakened servers (controls)
def _first_come(self: Any, by_layout: Any) -> Any:
    """Control: the first upload's layout is the round's (the rule before 56e17e9 / 0c902ce)."""
    if not by_layout:
        return None
    layout, chosen = next(iter(by_layout.items()))
    for nodes in by_layout.values():
        for node in nodes if nodes is not chosen else ():
            self._report.refused[node] = f"SpecMismatchError: the upload of node {node} has another layout than the first"
    return layout, sorted(chosen)


def first_come(cls: type) -> type:
    return type(f"FirstCome{cls.__name__}", (cls,), {"__slots__": (), "_plurality": _first_come})


# ============================================================================ threat model 1 and 2(a)
@dataclass(frozen=True)
class Schedule:
    bad: int  # the malicious node X
    choice: str
    order: tuple[int, ...]  # arrival order of the uploads
    gone: int | None  # the honest node gone from ENCRYPT on

    def label(self) -> str:
        order = "".join(LETTER[n] for n in self.order)
        return f"X={LETTER[self.bad]} {self.choice} order={order or '-'} gone={LETTER[self.gone] if self.gone else '-'}"


def schedules(bad_nodes: tuple[int, ...]) -> list[Schedule]:
    out: list[Schedule] = []
    for bad in bad_nodes:
        honest = [n for n in NODES if n != bad]
        for choice in CHOICES:
            for gone in (None, *honest):
                uploaders = [n for n in honest if n != gone]
                orders = []
                for position in POSITIONS if choice not in ("none", "gone") else ("-",):
                    if position == "-":
                        order = tuple(uploaders)
                    else:
                        at = {"first": 0, "middle": len(uploaders) // 2, "last": len(uploaders)}[position]
                        order = tuple(uploaders[:at] + [bad] + uploaders[at:])
                    if order not in orders:
                        orders.append(order)
                out += [Schedule(bad, choice, order, gone) for order in orders]
    return out


@dataclass
class Outcome:
    done: bool
    result: Any = None
    error: str = ""
    layouts: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # node -> (digest, length) it uploaded
    inputs: dict[int, np.ndarray] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    sums_after_encrypt: int | None = None
    client_refusals: list[str] = field(default_factory=list)


def drive(proto: Protocol, sched: Schedule, server_cls: Any) -> Outcome:
    """One round through ``server_cls`` (honest or a control) with real nodes, as ``sched`` says."""
    round_id = proto.start()
    server = proto.server(server_cls, round_id)
    silent = {sched.gone} - {None}
    if sched.choice == "gone":
        silent.add(sched.bad)
    out = Outcome(done=False)
    encrypted = False
    try:
        requests = server.begin()
        while requests:
            stage = server.stage
            if stage is proto.Stage.ENCRYPT:
                for node in sched.order:
                    choice = sched.choice if node == sched.bad else "honest"
                    x, digest = set_input(proto, node, choice)
                    reply = proto.fed.clients[node].handle(requests[node].to_bytes())
                    out.layouts[node], out.inputs[node] = (digest, len(x)), x
                    try:
                        server.receive(reply.to_bytes(), sender=node)
                    except FedcryptError as exc:
                        out.client_refusals.append(f"server refused {LETTER[node]}'s upload: {exc}")
                if not proto.roster:
                    out.sums_after_encrypt = len(server._sums)
                encrypted = True
            else:
                for node in sorted(requests):
                    if encrypted and node in silent:
                        continue
                    try:
                        reply = proto.fed.clients[node].handle(requests[node].to_bytes())
                    except FedcryptError as exc:
                        out.client_refusals.append(f"{LETTER[node]} refused {type(requests[node]).__name__}: {type(exc).__name__}: {exc}")
                        continue
                    server.receive(reply.to_bytes(), sender=node)
            if stage is proto.Stage.ENCRYPT:
                try:
                    requests = server.end_stage()
                finally:
                    out.refused = dict(server.report.refused)
            else:
                requests = server.end_stage()
        out.done, out.result = True, server.result
    except FedcryptError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    return out


@dataclass
class Verdicts:
    searched: int = 0
    plans: list[tuple[str, str]] = field(default_factory=list)
    ties: list[str] = field(default_factory=list)
    tie_ends: list[tuple[str, str]] = field(default_factory=list)  # a 1:1 tie that ended otherwise (not a plan; must be empty)
    ok: int = 0
    ineligible: int = 0
    sums: collections.Counter = field(default_factory=collections.Counter)  # (sums, distinct layouts, uploaders)


def judge(proto: Protocol, sched: Schedule, out: Outcome, verdicts: Verdicts) -> None:
    verdicts.searched += 1
    label = f"{proto.name} {sched.label()}"
    honest = [n for n in sched.order if n != sched.bad]
    odd = sched.choice in ("other-digest", "other-length")
    if out.sums_after_encrypt is not None:
        distinct = len(set(out.layouts.values()))
        verdicts.sums[(out.sums_after_encrypt, distinct, len(out.layouts))] += 1
        if out.sums_after_encrypt > len(out.layouts):
            verdicts.plans.append((label, f"memory: {out.sums_after_encrypt} sums for {len(out.layouts)} uploads"))
    # threat model 2(a): a result's contributors name one layout, and the mean is theirs
    if out.done:
        result = out.result
        contributors = list(result.contributors)
        named = {out.layouts[n] for n in contributors}
        if len(named) != 1 or result.layout != next(iter(named))[0]:
            verdicts.plans.append((label, f"mixed: contributors {contributors} name {len(named)} layouts"))
            return
        weights = [proto.fed.weights[n] for n in contributors]
        expected = sum(proto.fed.weights[n] * out.inputs[n] for n in contributors) / sum(weights)
        if result.mean.shape != expected.shape or np.max(np.abs(result.mean - expected)) > proto.bound(weights):
            verdicts.plans.append((label, "wrong sum: the mean is not the contributors'"))
            return
    # threat model 1: availability
    group = honest + ([sched.bad] if sched.choice == "honest" else [])  # X with the honest layout uploads as one of them
    eligible = len(group) >= MIN_CONTRIBUTIONS and (not odd or len(honest) > 1)
    if not eligible:
        if odd and len(honest) == 1:
            # the documented limit: a 1:1 tie between layouts ends the round
            if out.done or "SpecMismatchError" not in out.error or "none by more nodes" not in out.error:
                verdicts.tie_ends.append((label, out.error or "DONE"))
            else:
                verdicts.ties.append(label)
        else:
            verdicts.ineligible += 1
        return
    expected_contributors = sorted(group)
    if not out.done:
        verdicts.plans.append((label, f"not finished: {out.error}; {out.client_refusals}"))
    elif list(out.result.contributors) != expected_contributors:
        verdicts.plans.append((label, f"contributors {list(out.result.contributors)}, expected {expected_contributors}"))
    elif out.result.layout != honest_layout(proto):
        verdicts.plans.append((label, "the round's layout is not the honest one"))
    else:
        verdicts.ok += 1
        if odd and not out.refused.get(sched.bad, "").startswith("SpecMismatchError"):
            verdicts.plans.append((label, f"the odd uploader was not refused in the report: {out.refused}"))


def search_availability(proto: Protocol, server_cls: Any, bad_nodes: tuple[int, ...]) -> Verdicts:
    verdicts = Verdicts()
    for sched in schedules(bad_nodes):
        judge(proto, sched, drive(proto, sched, server_cls), verdicts)
    return verdicts


# ============================================================================ threat model 2(b): malicious server, roster
SETS = {  # the sets an honest node may confirm (its own upload in it, at least min_contributions)
    100: (frozenset({100, 101}), frozenset({100, 102}), frozenset(NODES)),
    101: (frozenset({100, 101}), frozenset({101, 102}), frozenset(NODES)),
}


@dataclass
class Stock:
    """Round-2 uploads of A, B (honest layout) and X = C (``choice``), every honest node's state
    and confirmation for each set it may confirm, and X's confirmations of any set under either layout."""

    choice: str
    round_id: int
    uploads: dict[int, Any]
    layouts: dict[int, tuple[bytes, int]]
    after_upload: dict[int, bytes]
    confirmed: dict[tuple[int, frozenset[int]], tuple[bytes, bytes]]  # (node, set) -> (its state after, signature)
    x_conf: dict[tuple[frozenset[int], bytes], bytes]  # (set, layout) -> X's signature


def _entries(stock: Stock, members: Any) -> tuple[tuple[str, int, bytes], ...]:
    return tuple(sorted((u.member, u.node, hashlib.sha256(u.blob).digest()) for u in (stock.uploads[n] for n in members)))


def _statement(proto: Protocol, stock: Stock, members: frozenset[int], layout: bytes) -> bytes:
    return proto.statements.confirm_bytes(
        roster_digest=proto.fed.config.roster_digest,
        round_id=stock.round_id,
        fingerprint=proto.fingerprint(),
        layout=layout,
        summed=set_digest(_entries(stock, members)),
    )


def make_stock(proto: Protocol, choice: str) -> Stock:
    round_id = proto.start()
    fingerprint = proto.fingerprint()
    uploads, layouts = {}, {}
    for node in NODES:
        x, digest = set_input(proto, node, choice if node == 102 else "honest")
        uploads[node] = proto.fed.clients[node].handle(proto.EncryptRequest(round_id, node, fingerprint))
        layouts[node] = proto.layout_of(uploads[node])  # (digest, length of the blob: x and the weight slot)
        assert layouts[node] == (digest, len(x) + 1), layouts[node]
    after = {node: proto.fed.clients[node].to_state_bytes() for node in NODES}
    stock = Stock(choice, round_id, uploads, layouts, after, {}, {})
    for node, options in SETS.items():
        for members in options:
            client = proto.rebuild(node, after[node])
            reply = client.handle(proto.ConfirmRequest(round_id, node, _entries(stock, members)))
            stock.confirmed[(node, members)] = (client.to_state_bytes(), reply.signature)
    signer = proto.fed.identity(102).signing_key
    for members in (frozenset({100, 102}), frozenset({101, 102}), frozenset(NODES)):
        for layout in {layouts[100][0], layouts[102][0]}:
            stock.x_conf[(members, layout)] = signer.sign(_statement(proto, stock, members, layout))
    return stock


def requests_for(proto: Protocol, stock: Stock, world: dict[int, frozenset[int]], node: int) -> Iterator[tuple[str, tuple[Any, ...], frozenset[int]]]:
    """Every one-shot and streamed request sequence the search sends ``node`` in ``world``: (label, messages, set summed)."""
    x_layouts = sorted({stock.layouts[100][0], stock.layouts[102][0]})

    def items(order: tuple[int, ...], members: frozenset[int], x_layout: bytes) -> tuple[Any, ...]:
        out = []
        for n in order:
            if n == 102:
                signature = stock.x_conf.get((members, x_layout), b"")
            else:
                signature = stock.confirmed[(n, world[n])][1]
            out.append(proto.ConfirmedUpload(stock.uploads[n], signature))
        return tuple(out)

    def tag(members: frozenset[int], x_layout: bytes) -> str:
        if 102 not in members:
            return ""
        return f" (X signs {'its own' if x_layout == stock.layouts[102][0] else 'the honest'} layout)"

    for size in (1, 2, 3):
        for order in itertools.permutations(NODES, size):
            members = frozenset(order)
            for x_layout in x_layouts if 102 in order else x_layouts[:1]:
                name = "".join(LETTER[n] for n in order)
                request = proto.DecryptRequest(stock.round_id, node, b"", items(order, members, x_layout), 0)
                yield f"D0({name}){tag(members, x_layout)}", (request,), members
    for size in (2, 3):
        for members in map(frozenset, itertools.combinations(NODES, size)):
            entries = _entries(stock, members)
            ordered = tuple(e[1] for e in entries)  # a stream sends the uploads in entry order
            for x_layout in x_layouts if 102 in members else x_layouts[:1]:
                batch = items(ordered, members, x_layout)
                for split in range(1, size):
                    name = "".join(LETTER[n] for n in ordered)
                    yield (
                        f"P0[{name}]({name[:split]}) D1({name[split:]}){tag(members, x_layout)}",
                        (
                            proto.SumPart(stock.round_id, node, 0, entries, batch[:split]),
                            proto.DecryptRequest(stock.round_id, node, b"", batch[split:], 1),
                        ),
                        members,
                    )


@dataclass
class Leak:
    searched_worlds: int = 0
    sequences: int = 0
    messages: int = 0
    releases: collections.Counter = field(default_factory=collections.Counter)
    plans: list[tuple[str, str]] = field(default_factory=list)
    refusals: collections.Counter = field(default_factory=collections.Counter)
    confirmations_of_mixed_sets: int = 0
    changed: list[str] = field(default_factory=list)


def search_release(proto: Protocol, stock: Stock, client_cls: Any, decryptors: tuple[int, ...], leak: Leak) -> None:
    honest_digest = stock.layouts[100]
    mixed_sets = {m for m in (frozenset({100, 102}), frozenset({101, 102}), frozenset(NODES)) if stock.layouts[102] != honest_digest}
    leak.confirmations_of_mixed_sets += sum(1 for (_, members) in stock.confirmed if members in mixed_sets)
    for conf_a, conf_b in itertools.product(SETS[100], SETS[101]):
        world = {100: conf_a, 101: conf_b}
        leak.searched_worlds += 1
        names = ["".join(LETTER[n] for n in sorted(conf)) for conf in (conf_a, conf_b)]
        wname = f"{proto.name} X={stock.choice} A confirms {names[0]}, B {names[1]}"
        for node in decryptors:
            start = stock.confirmed[(node, world[node])][0]
            client = proto.rebuild(node, start, client_cls)
            for label, messages, members in requests_for(proto, stock, world, node):
                leak.sequences += 1
                accepted = False
                for message in messages:
                    leak.messages += 1
                    before = client.to_state_bytes()
                    try:
                        reply = client.handle(message.to_bytes())
                    except FedcryptError as exc:
                        leak.refusals[type(exc).__name__] += 1
                        if client.to_state_bytes() != before:
                            leak.changed.append(f"{wname} {LETTER[node]} {label}")
                        break
                    accepted = True
                    if isinstance(reply, proto.released_types):
                        what = "".join(LETTER[n] for n in sorted(members))
                        leak.releases[(proto.name, stock.choice, LETTER[node], what)] += 1
                        layouts = {stock.layouts[n] for n in members}
                        honest_ok = all(world[n] == members for n in members if n != 102)
                        if len(layouts) > 1 or not honest_ok or len(members) < MIN_CONTRIBUTIONS:
                            why = "mixed layouts" if len(layouts) > 1 else "not confirmed" if not honest_ok else "too small"
                            leak.plans.append((f"{wname}: {LETTER[node]} {label}", f"released {what} ({why})"))
                if accepted:  # the node moved on (a stream opened, or a release): start the next sequence afresh
                    client = proto.rebuild(node, start, client_cls)


# ============================================================================ weakened nodes (controls)
def layout_blind_threshold(base: type) -> type:
    from fedcrypt.he.threshold import ThresholdSum  # noqa: PLC0415
    from fedcrypt.he.threshold.round import _statements  # noqa: PLC0415

    def _fold(self: Any, message: Any, entries: Any, start: int, layout: bytes | None) -> Any:
        """Control: each upload and confirmation checked under the upload's own layout (no one-layout check)."""
        holder = self._require_holder()
        if start + len(message.uploads) > len(entries):
            raise self._violation("too many uploads", message)
        part = entries[start : start + len(message.uploads)]
        summed_digest = set_digest(entries)
        for item, (member, node, digest) in zip(message.uploads, part):
            upload = item.upload
            if (upload.round_id, upload.member, upload.node, hashlib.sha256(upload.blob).digest()) != (message.round_id, member, node, digest):
                raise self._violation("not the entry", message)
            common = dict(roster_digest=self.config.roster_digest, round_id=message.round_id, fingerprint=holder.fingerprint)
            _statements.verify(
                self.config.roster,
                member,
                upload.signature,
                _statements.upload_bytes(**common, node=node, member=member, blob_digest=digest, layout=upload.layout),
                "upload",
            )
            _statements.verify(
                self.config.roster,
                member,
                item.confirmation,
                _statements.confirm_bytes(**common, layout=upload.layout, summed=summed_digest),
                "confirmation",
            )
        summed = ThresholdSum.under(self.config.params, holder.fingerprint, holder.key_tag)
        for item in message.uploads:
            summed.add(item.upload.blob, self.config.max_weight)
        return summed, layout or message.uploads[0].upload.layout

    return type(f"LayoutBlind{base.__name__}", (base,), {"__slots__": (), "_fold": _fold})


def layout_blind_ckks(base: type) -> type:
    from fedcrypt.he.blob import peek_header  # noqa: PLC0415
    from fedcrypt.he.round import _statements  # noqa: PLC0415

    def _fold(self: Any, message: Any, entries: Any, start: int, layout: bytes | None) -> Any:
        """Control: each upload and confirmation checked under the upload's own layout, and a sum
        that takes each upload's digest (the one-layout checks of the decryptor and of EncryptedSum off)."""
        owner = self._require_owner()
        if start + len(message.uploads) > len(entries):
            raise self._violation("too many uploads", message)
        part = entries[start : start + len(message.uploads)]
        summed_digest = set_digest(entries)
        for item, (member, node, digest) in zip(message.uploads, part):
            upload = item.upload
            if (upload.round_id, upload.member, upload.node, hashlib.sha256(upload.blob).digest()) != (message.round_id, member, node, digest):
                raise self._violation("not the entry", message)
            own = peek_header(upload.blob).spec_digest
            common = dict(roster_digest=self.config.roster_digest, round_id=message.round_id, fingerprint=owner.fingerprint)
            statement = _statements.upload_bytes(**common, node=node, member=member, blob_digest=digest, layout=own)
            self._verify(member, upload.signature, statement, "upload")
            self._verify(member, item.confirmation, _statements.confirm_bytes(**common, layout=own, summed=summed_digest), "confirmation")
        summed = owner.aggregator_context().start()
        for item in message.uploads:
            if summed.count:
                summed._digest = peek_header(item.upload.blob).spec_digest
            summed.add(item.upload.blob, 1)
        return summed, layout or peek_header(message.uploads[0].upload.blob).spec_digest

    return type(f"LayoutBlind{base.__name__}", (base,), {"__slots__": (), "_fold": _fold})


# ============================================================================ fixtures and tests
@pytest.fixture(scope="module")
def threshold() -> dict[bool, ThresholdProtocol]:
    return {roster: ThresholdProtocol(roster) for roster in (False, True)}


@pytest.fixture(scope="module")
def ckks() -> dict[bool, CkksProtocol]:
    return {roster: CkksProtocol(roster) for roster in (False, True)}


def _report(title: str, verdicts: Verdicts, took: float) -> None:
    print(
        f"\n{title}: {verdicts.searched} schedules in {took:.1f} s; plans {len(verdicts.plans)}, finished as required {verdicts.ok}, "
        f"documented ties {len(verdicts.ties)}, ineligible {verdicts.ineligible}; (sums, layouts, uploads) after ENCRYPT: {dict(verdicts.sums)}"
    )
    for label, why in verdicts.plans[:5]:
        print("  PLAN", label, "--", why)


def _availability(protocols: dict[bool, Protocol], bad_nodes: tuple[int, ...], control: bool = False) -> dict[bool, Verdicts]:
    out = {}
    for roster, proto in protocols.items():
        began = time.monotonic()
        cls = first_come(proto.server_cls) if control else proto.server_cls
        out[roster] = search_availability(proto, cls, bad_nodes)
        _report(f"{proto.name}{' (first-come control)' if control else ''}", out[roster], time.monotonic() - began)
    return out


def _check_real(verdicts: dict[bool, Verdicts], bad_nodes: tuple[int, ...]) -> None:
    for roster, v in verdicts.items():
        assert not v.plans, v.plans[:5]
        assert not v.tie_ends, v.tie_ends[:5]
        assert v.searched == len(schedules(bad_nodes))
        # the search reached what it is about: rounds that must finish, and the documented ties
        # (per X: 7 honest-layout schedules, 3 + 3 with another layout and nobody gone, 1 + 1 without an upload;
        # 8 ties: another layout against the one honest uploader left, X first or last)
        assert v.ok == 15 * len(bad_nodes) and len(v.ties) == 8 * len(bad_nodes) and v.ineligible == 4 * len(bad_nodes)
        if not roster:  # one running sum per layout named, never more than the uploads
            assert all(sums == distinct <= uploads for (sums, distinct, uploads) in v.sums), v.sums
            assert any(sums == 2 for (sums, _, _) in v.sums)


def test_ckks_search_finds_no_plan(ckks: dict[bool, CkksProtocol]) -> None:
    _check_real(_availability(ckks, NODES), NODES)


@pytest.mark.parametrize("roster", [False, True], ids=["no-roster", "roster"])
def test_ckks_search_with_three_decryptors(roster: bool) -> None:
    """The same search with ``decryptors=3`` (the server's choice; every node may be asked)."""
    proto = CkksProtocol(roster, decryptors=3)
    _check_real(_availability({roster: proto}, NODES), NODES)


def test_ckks_odd_uploader_is_no_decryptor_candidate() -> None:
    """The break's witness, now a regression test (fixed in 80e8b6b): X = C uploads another digest,
    last; with ``decryptors=3`` the round finishes with A and B, and C is not asked to decrypt."""
    proto = CkksProtocol(False, decryptors=3)
    out = drive(proto, Schedule(102, "other-digest", (100, 101, 102), None), proto.server_cls)
    assert out.done and list(out.result.contributors) == [100, 101], out.error
    assert 102 not in out.result.decryptors
    assert not any("C refused DecryptRequest" in r for r in out.client_refusals), out.client_refusals


def test_threshold_search_finds_no_plan(threshold: dict[bool, ThresholdProtocol]) -> None:
    _check_real(_availability(threshold, (101,)), (101,))


@pytest.mark.slow
def test_threshold_search_finds_no_plan_every_malicious_node(threshold: dict[bool, ThresholdProtocol]) -> None:
    _check_real(_availability(threshold, NODES), NODES)


def _check_control(verdicts: dict[bool, Verdicts], bad: int) -> None:
    for v in verdicts.values():
        assert v.plans, "the control must be found"
        labels = {label.split(" ", 1)[1] for label, _ in v.plans}
        # X answers first with another layout: the honest uploads are refused and the round aborts
        honest = [n for n in NODES if n != bad]
        assert Schedule(bad, "other-digest", (bad, *honest), None).label() in labels, sorted(labels)[:5]


def test_ckks_control_first_come_server_is_found(ckks: dict[bool, CkksProtocol]) -> None:
    _check_control(_availability(ckks, (100,), control=True), 100)


def test_threshold_control_first_come_server_is_found(threshold: dict[bool, ThresholdProtocol]) -> None:
    _check_control(_availability(threshold, (101,), control=True), 101)


def _release_search(proto: Protocol, client_cls: Any, choices: tuple[str, ...]) -> Leak:
    leak = Leak()
    began = time.monotonic()
    for choice in choices:
        search_release(proto, make_stock(proto, choice), client_cls, (100, 101), leak)
    took = time.monotonic() - began
    print(
        f"\n{proto.name} malicious server, {client_cls.__name__}: {leak.searched_worlds} worlds, {leak.sequences} request sequences, "
        f"{leak.messages} messages in {took:.1f} s; plans {len(leak.plans)}; honest confirmations of mixed sets "
        f"{leak.confirmations_of_mixed_sets}; refusals {dict(leak.refusals)}"
    )
    print("  releases:", "; ".join(f"{c}/{n} {what} x{k}" for (_, c, n, what), k in sorted(leak.releases.items())))
    for label, why in leak.plans[:5]:
        print("  PLAN", label, "--", why)
    return leak


def _check_release_real(leak: Leak) -> None:
    assert not leak.changed, leak.changed[:5]
    assert not leak.plans, leak.plans[:5]
    # reached: both honest decryptors release the honest pair in the world where both confirm it
    for choice in ("other-digest", "other-length"):
        for node in "AB":
            assert leak.releases[(next(iter(leak.releases))[0], choice, node, "AB")] > 0
    assert leak.confirmations_of_mixed_sets > 0  # honest nodes do confirm mixed sets (they cannot see layouts)


def test_ckks_malicious_server_releases_no_mixed_set(ckks: dict[bool, CkksProtocol]) -> None:
    proto = ckks[True]
    _check_release_real(_release_search(proto, proto.client_cls, ("other-digest", "other-length")))


def test_threshold_malicious_server_releases_no_mixed_set(threshold: dict[bool, ThresholdProtocol]) -> None:
    proto = threshold[True]
    _check_release_real(_release_search(proto, proto.client_cls, ("other-digest", "other-length")))


def _check_release_control(leak: Leak) -> None:
    assert leak.plans, "the control must be found"
    assert any("released ABC (mixed layouts)" in why for _, why in leak.plans), leak.plans[:5]


def test_ckks_control_layout_blind_decryptor_is_found(ckks: dict[bool, CkksProtocol]) -> None:
    proto = ckks[True]
    _check_release_control(_release_search(proto, layout_blind_ckks(proto.client_cls), ("other-digest",)))


def test_threshold_control_layout_blind_holder_is_found(threshold: dict[bool, ThresholdProtocol]) -> None:
    proto = threshold[True]
    _check_release_control(_release_search(proto, layout_blind_threshold(proto.client_cls), ("other-digest",)))
