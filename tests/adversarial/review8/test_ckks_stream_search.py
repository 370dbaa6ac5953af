"""Attacker review 8: a malicious server searches the streamed DECRYPT of the CKKS round (624032a).

624032a streams the confirmed set of signed uploads to each decryptor: ``SumPart(0, entries,
first uploads)``, ``SumPart(k, (), uploads)`` ... each answered by a ``SumAck``, then
``DecryptRequest(part=k, last uploads)``; a set that fits in one part is still one
``DecryptRequest(part=0)``. The decryptor keeps the entries and its running sum in its state
bytes between parts. The claim (:mod:`fedcrypt.he.round`, "Malicious server"): every release is
a sum of ``>= min_contributions`` uploads of distinct members in one round, the sets released in
one round are equal or disjoint, and the server never gets one upload or the difference of
two overlapping sums.

The search (crafted from real pieces, not random): real nodes of a roster federation
(:class:`he._round_harness.Federation`, ``key_setup="file"``). Round 1 runs honestly (the whole
set is released); round 2 stops after ENCRYPT with fresh inputs, and the server spends each
node's one confirmation of round 2 in one of several *worlds* (everyone confirms the whole set;
two disjoint pairs; three confirm their triple while the fourth confirms the whole set ...).
In each world the server holds: every round-2 upload with its node's confirmation (if any),
every round-1 upload with its round-1 confirmation, and every round-1 upload relabelled as a
round-2 one. From these it builds an alphabet of messages:

* ``SumPart(0, E, batch)`` for entry lists ``E``: each confirmed set in two orders, the whole
  round-2 set, each confirmed set with its last member omitted, with one member added, with its
  first entry duplicated, with one entry's digest swapped for that member's round-1 upload, and
  the round-1 set's entries (cross-round);
* ``SumPart(k, (), batch)`` for every ``k`` in ``1..n-1`` and ``DecryptRequest(part=k, batch)``
  for every ``k`` in ``0..n-1`` (``k = 0`` is the one-shot request, interleaved with the streams);
* the same three kinds for round 1 with the round-1 pieces (replaying round 1's set);
* ``batch``: every single piece, every ordered pair of round-2 uploads, every (round-2 upload,
  relabelled round-1 upload) pair, and every contiguous run of each confirmed set in both orders
  (so every honest partition of a set into parts, and every splice of another set's uploads).

A breadth-first search over the decryptor's *state bytes* sends every message of the alphabet
to every state reached (the node rebuilt with ``CkksClient.from_state_bytes`` before every
message, so every message meets a node that went through its state bytes), up to a bounded
number of messages, for a decryptor with one decryption left and one with two. Replayed parts,
reordered parts, restarts of part 0 with another entry list, one-shot requests in the middle of
a stream and cross-round entries are all sequences of this alphabet. Every released
``Decryption`` is solved against the known plaintexts (``fed.weights`` and each round's inputs:
least squares over the ``2n`` uploads, rounded to integer counts), and a *plan* is:

* a release that counts an upload twice, mixes rounds, or has fewer than ``min_contributions``
  members;
* two releases of one round (from any decryptors, round 1's honest release included) that
  overlap but differ;
* any single upload in the rational span of the releases (the server solves for it).

Every refusal must be a :class:`~fedcrypt.errors.FedcryptError` and leave the decryptor's
state unchanged (a fingerprint of every field after every refusal, and
``to_state_bytes()`` compared on every slow refusal and a sample of the others). Every witness
path is replayed on a live node without rebuilds and must give the same replies.

Bounds: by default ``n = 4``, ``min_contributions = 2``, three worlds (whole set; two pairs;
a triple with the fourth node confirming the whole set), up to 3 messages, the whole-set world
with two decryptors (one and two decryptions left), the others with one: about 90,000 messages
to 126 decryptor states, some 35 s. ``@pytest.mark.slow``: up to 6 messages and every node as a
decryptor, for ``(n, min_contributions)`` in ``(4, 2)``, ``(4, 3)``, ``(3, 2)``, ``(3, 3)`` (about
690,000 messages to some 1,400 decryptor states, some 4 min).

* **Result: no plan** against the real decryptor: only the honestly confirmed sets are ever
  released (streamed, in one shot, and in one shot in the middle of an open stream), every
  release of one set is bit-identical (no second flooding sample), every refusal is a typed
  ``FedcryptError`` (``ProtocolViolationError``, ``UnexpectedMessageError``,
  ``InvalidSignature``) that leaves the state as it was, and every witness path gives the same
  replies on a live node, on rebuilt nodes and through the wire bytes.
* **Positive controls:** the same search finds plans against a decryptor that decrypts a stream's
  last part without checking that every entry is in (``DecryptsPartialStream``:
  ``P0[ABCD](A2)`` then ``DecryptRequest(part=1, B2)`` releases ``A2+B2``, overlapping the honest
  release of the whole set; ``P0[ABCD](A2,B2)`` then ``DecryptRequest(part=1, C2)`` gives
  ``A2+B2+C2`` and with ``A2+B2`` the server solves for ``C2`` alone), and against one that
  checks only part 0 and trusts the later parts (``TrustsLaterParts``: ``P0[AB](A2)`` then
  ``DecryptRequest(part=1, C2)`` splices C's upload into the confirmed pair ``{A, B}``:
  ``A2+C2`` overlaps both confirmed pairs).
* **Informative (slow):** a decryptor that does not match later parts to part 0's entries but
  still verifies each upload's signature and its confirmation of the entry set under the upload's
  own labels (``NoEntryMatchInLaterParts``) yields no plan either (it accepts more: reordered
  parts): the set confirmations alone bind every summed upload to the set, so the position check
  is a second line of defence; the check that carries the claim in the stream is that every
  entry is folded in before the decryption.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from he._round_harness import MAX_WEIGHT, D, Federation

from fedcrypt.errors import FedcryptError
from fedcrypt.he._round_common import set_digest
from fedcrypt.he.blob import BlobKind, peek_header
from fedcrypt.he.round import (
    CkksClient,
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    Decryption,
    DecryptRequest,
    Stage,
    SumAck,
    SumPart,
    Upload,
)

LETTERS = "ABCDEFGH"


# ============================================================================ weakened decryptors
class DecryptsPartialStream(CkksClient):
    """Control: decrypts a stream's last part without checking that every entry is folded in."""

    __slots__ = ()

    def _on_decrypt_request(self, message: DecryptRequest) -> Decryption:
        if message.part == 0 or self.config.roster is None:
            return super()._on_decrypt_request(message)
        owner = self._require_owner()
        if self._decryptions >= self._uploads:
            raise self._unexpected("budget", message)
        if message.aggregate or not message.uploads:
            raise self._violation("aggregate", message)
        _, entries, layout, summed = self._next_part(message, message.part)
        # (the real decryptor refuses here unless summed.count + len(uploads) == len(entries))
        batch, _ = self._fold(message, entries, summed.count, layout)
        summed.merge(batch)
        total = owner.decrypt_sum(summed)
        reply = Decryption.of(message.round_id, self.node, total)
        self._decryptions += 1
        self._stream = None
        return reply


class TrustsLaterParts(CkksClient):
    """Control: part 0 is checked in full; later parts are only checked to be uploads under the key."""

    __slots__ = ()

    def _fold(self, message: Any, entries: Any, start: int, layout: bytes | None) -> Any:
        if start == 0:
            return super()._fold(message, entries, start, layout)
        if start + len(message.uploads) > len(entries):
            raise self._violation("too many uploads", message)
        summed = self._require_owner().aggregator_context().start()
        for item in message.uploads:
            summed.add(item.upload.blob, 1)
        return summed, layout


class NoEntryMatchInLaterParts(CkksClient):
    """Informative: later parts are verified under each upload's own labels, not matched to the entries.

    Each upload of a part after part 0 must still be an upload-kind blob under the key with the
    set's layout, signed by its own member for its own (node, digest), and carry that member's
    confirmation of the stream's entry set; only the check that it *is* the entry at its position
    is gone.
    """

    __slots__ = ()

    def _fold(self, message: Any, entries: Any, start: int, layout: bytes | None) -> Any:
        if start == 0:
            return super()._fold(message, entries, start, layout)
        if start + len(message.uploads) > len(entries):
            raise self._violation("too many uploads", message)
        owner = self._require_owner()
        own = tuple((i.upload.member, i.upload.node, hashlib.sha256(i.upload.blob).digest()) for i in message.uploads)
        for item in message.uploads:
            if item.upload.round_id != message.round_id:
                raise self._unexpected("another round", message)
            header = peek_header(item.upload.blob)
            if header.kind != BlobKind.UPLOAD or header.fingerprint != owner.fingerprint or header.spec_digest != layout:
                raise self._violation("not an upload of this key and layout", message)
        assert layout is not None
        self._verify_uploads(message, own, layout)
        self._verify_confirmations(message, set_digest(entries), own, layout)
        summed = owner.aggregator_context().start()
        for item in message.uploads:
            summed.add(item.upload.blob, 1)
        return summed, layout


# ============================================================================ the scene
@dataclass(frozen=True)
class Piece:
    """A confirmed upload the server may send, and whose update of which round it carries."""

    label: str
    item: ConfirmedUpload
    owner: int
    round: int


@dataclass
class World:
    """One way the server spent the round-2 confirmations: the pieces and the decryptors' start states."""

    name: str
    confirmed: dict[int, tuple[int, ...]]  # node -> the set (nodes, in order) it confirmed
    sets: list[tuple[int, ...]]  # distinct confirmed sets
    pieces2: list[Piece]
    pieces1: list[Piece]
    relabelled: list[Piece]
    start: dict[int, bytes]


class Scene:
    """Round 1 honest (whole set released); round 2 up to CONFIRM with fresh inputs."""

    def __init__(self, n: int, minimum: int, seed: int) -> None:
        self.n, self.minimum = n, minimum
        fed = Federation(n, roster=True, min_contributions=minimum, decryptors=2, key_setup="file", seed=seed)
        self.fed = fed
        self.nodes = sorted(fed.clients)
        self.inputs = {1: dict(fed.inputs)}
        server1, log1 = fed.run(1)
        self.round1_decryptors = list(server1.result.decryptors)
        self.u1: dict[int, Upload] = dict(log1.replies[Stage.ENCRYPT])
        self.c1: dict[int, bytes] = {n_: c.signature for n_, c in log1.replies[Stage.CONFIRM].items()}
        self.entries1 = log1.requests[Stage.CONFIRM][self.nodes[0]].entries
        rng = np.random.default_rng(seed + 1000)
        fed.inputs = {node: rng.uniform(-1.0, 1.0, D) for node in self.nodes}
        self.inputs[2] = dict(fed.inputs)
        _, log2 = fed.run(2, until=Stage.CONFIRM)
        self.u2: dict[int, Upload] = dict(log2.replies[Stage.ENCRYPT])
        self.saved = {node: fed.clients[node].to_state_bytes() for node in self.nodes}
        self.columns = [(node, r) for r in (1, 2) for node in self.nodes]
        self.matrix = np.stack(
            [fed.weights[node] / MAX_WEIGHT * np.append(self.inputs[r][node], 1.0) for node, r in self.columns], axis=1
        )
        # the honest release of round 1, decoded like any other (it is in every family)
        released = log1.replies[Stage.DECRYPT][self.round1_decryptors[0]]
        self.honest1 = self.decode(released.values)
        assert self.honest1 == tuple(1 if r == 1 else 0 for _, r in self.columns)

    def name(self, node: int) -> str:
        return LETTERS[node - 100]

    def entry(self, upload: Upload) -> tuple[str, int, bytes]:
        return (upload.member, upload.node, hashlib.sha256(upload.blob).digest())

    def decode(self, values: np.ndarray) -> tuple[int, ...]:
        """How many times each upload (node, round) is in a released sum (least squares, rounded)."""
        coef, *_ = np.linalg.lstsq(self.matrix, values, rcond=None)
        rounded = np.rint(coef)
        residual = np.max(np.abs(self.matrix @ rounded - values))
        if residual > 1e-3:
            return ("undecodable",)  # type: ignore[return-value]
        return tuple(int(c) for c in rounded)

    def world(self, name: str, confirms: dict[int, tuple[int, ...]]) -> World:
        """Ask the real nodes (rebuilt from their post-upload states) to confirm the chosen sets."""
        fed = self.fed
        confirmations: dict[int, bytes] = {}
        start: dict[int, bytes] = {}
        for node in self.nodes:
            client = CkksClient.from_state_bytes(self.saved[node], config=fed.config, identity=fed.identity(node))
            chosen = confirms.get(node)
            if chosen is not None:
                reply = client.handle(ConfirmRequest(2, node, tuple(self.entry(self.u2[m]) for m in chosen)))
                assert isinstance(reply, Confirmation)
                confirmations[node] = reply.signature
            start[node] = client.to_state_bytes()
        sets = sorted(set(confirms.values()), key=lambda s: (len(s), s))
        pieces2 = [Piece(f"{self.name(m)}2", ConfirmedUpload(self.u2[m], confirmations.get(m, b"")), m, 2) for m in self.nodes]
        pieces1 = [Piece(f"{self.name(m)}1", ConfirmedUpload(self.u1[m], self.c1[m]), m, 1) for m in self.nodes]
        relabelled = [
            Piece(
                f"{self.name(m)}1>2",
                ConfirmedUpload(Upload(2, m, self.u1[m].blob, self.u1[m].member, self.u1[m].signature), self.c1[m]),
                m,
                1,
            )
            for m in self.nodes
        ]
        return World(name, dict(confirms), sets, pieces2, pieces1, relabelled, start)


# ============================================================================ the alphabet
def _runs(pieces: list[Piece]) -> list[tuple[Piece, ...]]:
    return [tuple(pieces[i:j]) for i in range(len(pieces)) for j in range(i + 1, len(pieces) + 1)]


def alphabet(scene: Scene, world: World, node: int) -> list[tuple[str, Any]]:
    """Every message the search sends (label, message), for decryptor ``node``."""
    by2 = {p.owner: p for p in world.pieces2}
    by1 = {p.owner: p for p in world.pieces1}
    rel = {p.owner: p for p in world.relabelled}
    n = scene.n

    def dedupe(batches: list[tuple[Piece, ...]]) -> list[tuple[Piece, ...]]:
        out, seen = [], set()
        for b in batches:
            key = tuple(p.label for p in b)
            if key not in seen:
                seen.add(key)
                out.append(b)
        return out

    # round-2 batches
    batches2: list[tuple[Piece, ...]] = [(p,) for p in world.pieces2 + world.relabelled + world.pieces1]
    batches2 += [(by2[a], by2[b]) for a in scene.nodes for b in scene.nodes if a != b]
    batches2 += [(by2[a], rel[b]) for a in scene.nodes for b in scene.nodes]
    for chosen in world.sets + [tuple(scene.nodes)]:
        batches2 += _runs([by2[m] for m in chosen]) + _runs([by2[m] for m in reversed(chosen)])
    batches2 = dedupe(batches2)
    # round-2 entry lists
    e2 = {m: scene.entry(scene.u2[m]) for m in scene.nodes}
    e1 = {m: scene.entry(scene.u1[m]) for m in scene.nodes}
    entry_lists: list[tuple[str, tuple]] = []
    for chosen in world.sets + [tuple(scene.nodes)]:
        tag = "".join(scene.name(m) for m in chosen)
        base = tuple(e2[m] for m in chosen)
        entry_lists.append((tag, base))
        entry_lists.append((tag[::-1], base[::-1]))
        if len(base) > 2:
            entry_lists.append((tag[:-1] + "(omit)", base[:-1]))
        outside = [m for m in scene.nodes if m not in chosen]
        if outside:
            entry_lists.append((tag + scene.name(outside[0]) + "(add)", base + (e2[outside[0]],)))
        entry_lists.append((tag + scene.name(chosen[0]) + "(dup)", base + (base[0],)))
        entry_lists.append((tag + "(swap1)", (e1[chosen[0]],) + base[1:]))
    entry_lists.append(("S1(cross)", tuple(scene.entries1)))
    seen_e, unique = set(), []
    for tag, e in entry_lists:
        if e not in seen_e:
            seen_e.add(e)
            unique.append((tag, e))
    out: list[tuple[str, Any]] = []

    def label(b: tuple[Piece, ...]) -> str:
        return ",".join(p.label for p in b)

    def add(round_id: int, batches: list[tuple[Piece, ...]], lists: list[tuple[str, tuple]]) -> None:
        for b in batches:
            items = tuple(p.item for p in b)
            for tag, e in lists:
                out.append((f"r{round_id}:P0[{tag}]({label(b)})", SumPart(round_id, node, 0, e, items)))
            for k in range(1, n):
                out.append((f"r{round_id}:P{k}({label(b)})", SumPart(round_id, node, k, (), items)))
            for k in range(0, n):
                out.append((f"r{round_id}:DR{k}({label(b)})", DecryptRequest(round_id, node, b"", items, k)))

    add(2, batches2, unique)
    # round 1: its own pieces, its set's entries in two orders
    order1 = [by1[m] for m in scene.nodes]
    batches1 = dedupe([(p,) for p in world.pieces1] + _runs(order1) + _runs(order1[::-1]))
    lists1 = [("S1", tuple(scene.entries1)), ("S1rev", tuple(scene.entries1)[::-1])]
    lists1 += [(f"{tag}(cross)", e) for tag, e in unique[:2]]  # round-2 entries in a round-1 stream
    add(1, batches1, lists1)
    return out


# ============================================================================ the search
def _fingerprint(client: CkksClient) -> tuple:
    stream = client._stream
    if stream is not None:
        summed = stream[4]
        stream = (stream[0], stream[1], stream[2], stream[3], summed.count, summed._done, frozenset(summed._seen), summed._total_weight)
    return (client._key_state, client._uploads, client._decryptions, client._encrypted_round, client._upload, client._confirmed, stream)


@dataclass
class Outcome:
    releases: dict[tuple, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # vector -> (decryptor, path)
    tried: int = 0
    accepted: int = 0
    states: int = 0
    full_checks: int = 0
    untyped: list[str] = field(default_factory=list)
    mutated: list[str] = field(default_factory=list)
    paths: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)  # witness (decryptor, message indices)
    witness: dict[tuple, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # (vector, stream/one-shot) -> path
    values: dict[tuple, bytes] = field(default_factory=dict)  # vector -> the first released values
    differing: set = field(default_factory=set)  # vectors released with two different value vectors
    released: int = 0
    restarts: int = 0  # part 0 accepted while another stream was open
    interleaved: int = 0  # a one-shot decryption released while a stream was open
    resumed: int = 0  # streamed releases (every one by a node rebuilt from its state bytes mid-stream)
    refusals: dict[str, int] = field(default_factory=dict)  # error type -> count


def search(
    scene: Scene, world: World, decryptors: list[int], cls: type[CkksClient], depth: int, outcome: Outcome, stop: Any = None
) -> Outcome:
    """Breadth-first over the decryptors' state bytes (each decryptor on its own; the releases pooled)."""
    fed = scene.fed
    for node in decryptors:
        letters = alphabet(scene, world, node)
        ident = fed.identity(node)

        def rebuild(state: bytes, ident: Any = ident) -> CkksClient:
            return cls.from_state_bytes(state, config=fed.config, identity=ident)

        start = world.start[node]
        frontier: list[tuple[bytes, tuple[int, ...]]] = [(start, ())]
        seen = {start}
        for _ in range(depth):
            nxt: list[tuple[bytes, tuple[int, ...]]] = []
            for state, path in frontier:
                outcome.states += 1
                client = rebuild(state)
                if client.decryptions >= client.uploads:
                    continue  # nothing more to release from here
                before = _fingerprint(client)
                for index, (_, message) in enumerate(letters):
                    outcome.tried += 1
                    t0 = time.perf_counter()
                    try:
                        reply = client.handle(message)
                    except FedcryptError as exc:
                        slow = time.perf_counter() - t0 > 0.002
                        outcome.refusals[type(exc).__name__] = outcome.refusals.get(type(exc).__name__, 0) + 1
                        changed = _fingerprint(client) != before
                        if not changed and (slow or outcome.tried % 64 == 0):
                            outcome.full_checks += 1
                            changed = client.to_state_bytes() != state
                        if changed:
                            outcome.mutated.append(" ; ".join(letters[i][0] for i in path + (index,)))
                            client = rebuild(state)
                        continue
                    except Exception as exc:  # noqa: BLE001 - the finding is an untyped refusal
                        outcome.untyped.append(f"{type(exc).__name__}: {exc} at {' ; '.join(letters[i][0] for i in path + (index,))}")
                        client = rebuild(state)
                        continue
                    outcome.accepted += 1
                    if before[-1] is not None:
                        outcome.restarts += isinstance(message, SumPart) and message.index == 0
                        outcome.interleaved += isinstance(message, DecryptRequest) and message.part == 0
                    outcome.resumed += isinstance(message, DecryptRequest) and message.part > 0
                    new = client.to_state_bytes()
                    assert isinstance(reply, (SumAck, Decryption)), reply
                    if isinstance(reply, Decryption):
                        vector = scene.decode(reply.values)
                        kind = "stream" if isinstance(message, DecryptRequest) and message.part else "one-shot"
                        outcome.released += 1
                        if vector not in outcome.values:
                            outcome.values[vector] = reply.values.tobytes()
                        elif outcome.values[vector] != reply.values.tobytes():
                            outcome.differing.add(vector)  # the same set released with other noise
                        if (vector, kind) not in outcome.witness:
                            how = (node, tuple(letters[i][0] for i in path + (index,)))
                            outcome.witness[(vector, kind)] = how
                            outcome.releases.setdefault(vector, how)
                            outcome.paths.append((node, path + (index,)))
                            if stop is not None and stop(outcome):
                                return outcome
                    if new not in seen:
                        seen.add(new)
                        nxt.append((new, path + (index,)))
                    client = rebuild(state)
            frontier = nxt
    return outcome


def _describe(scene: Scene, vector: tuple) -> str:
    if vector == ("undecodable",):
        return "<a release the known inputs do not explain>"
    parts = []
    for (node, r), c in zip(scene.columns, vector):
        if c:
            parts.append(("" if c == 1 else f"{c}*") + f"{scene.name(node)}{r}")
    return "+".join(parts) or "0"


def plans(scene: Scene, outcome: Outcome) -> list[str]:
    """What the releases give the server beyond the claim (round 1's honest release included)."""
    found: list[str] = []
    vectors = [scene.honest1] + list(outcome.releases)
    for vector in outcome.releases:
        how = outcome.releases[vector]
        if vector == ("undecodable",):
            found.append(f"undecodable release via {how}")
            continue
        support = [(col, c) for col, c in zip(scene.columns, vector) if c]
        members = {node for (node, _), _ in support}
        rounds = {r for (_, r), _ in support}
        if any(c != 1 for _, c in support):
            found.append(f"{_describe(scene, vector)}: an upload counted twice (or subtracted), via {how}")
        if len(rounds) > 1:
            found.append(f"{_describe(scene, vector)}: uploads of two rounds, via {how}")
        if len(members) < scene.minimum:
            found.append(f"{_describe(scene, vector)}: {len(members)} member(s), fewer than min_contributions, via {how}")
    good = [v for v in vectors if v != ("undecodable",)]
    for i, a in enumerate(good):
        for b in good[i + 1 :]:
            sa = {col for col, c in zip(scene.columns, a) if c}
            sb = {col for col, c in zip(scene.columns, b) if c}
            if sa != sb and sa & sb:
                found.append(f"{_describe(scene, a)} and {_describe(scene, b)} overlap (via {outcome.releases.get(a)} and {outcome.releases.get(b)})")
    if good:
        family = np.array(good, dtype=float)
        rank = np.linalg.matrix_rank(family)
        for j, (node, r) in enumerate(scene.columns):
            unit = np.zeros(len(scene.columns))
            unit[j] = 1.0
            if np.linalg.matrix_rank(np.vstack([family, unit])) == rank:
                found.append(f"the releases solve for upload {scene.name(node)}{r} alone")
    return found


def check_live_replay(scene: Scene, world: World, outcome: Outcome, cls: type[CkksClient]) -> None:
    """Each witness path, sent to one live node (no rebuilds), gives the same replies as the search saw."""
    fed = scene.fed
    for node, path in outcome.paths:
        letters = alphabet(scene, world, node)
        live = cls.from_state_bytes(world.start[node], config=fed.config, identity=fed.identity(node))
        rebuilt_state = world.start[node]
        for index in path:
            a = live.handle(letters[index][1])
            other = cls.from_state_bytes(rebuilt_state, config=fed.config, identity=fed.identity(node))
            b = other.handle(letters[index][1].to_bytes())  # and through the wire bytes
            assert a.to_bytes() == b.to_bytes()
            rebuilt_state = other.to_state_bytes()
            assert live.to_state_bytes() == rebuilt_state


# ============================================================================ the searches
WORLDS_4_2 = {
    "whole set": {100: (100, 101, 102, 103), 101: (100, 101, 102, 103), 102: (100, 101, 102, 103), 103: (100, 101, 102, 103)},
    "two pairs": {100: (100, 101), 101: (100, 101), 102: (102, 103), 103: (102, 103)},
    "triple + whole": {100: (100, 101, 102), 101: (100, 101, 102), 102: (100, 101, 102), 103: (100, 101, 102, 103)},
}


WORLDS_4_3 = {
    "whole set": WORLDS_4_2["whole set"],
    "triple + other triple": {100: (100, 101, 102), 101: (100, 101, 102), 102: (100, 101, 102), 103: (101, 102, 103)},
}
WORLDS_3_3 = {
    "whole set": {100: (100, 101, 102), 101: (100, 101, 102), 102: (100, 101, 102)},
    "one abstains": {100: (100, 101, 102), 101: (100, 101, 102)},
}
WORLDS_3_2 = {
    "whole set": {100: (100, 101, 102), 101: (100, 101, 102), 102: (100, 101, 102)},
    "pair + whole": {100: (100, 101), 101: (100, 101), 102: (100, 101, 102)},
}


def _decryptors(scene: Scene, which: str) -> list[int]:
    """``spent``: a round-1 decryptor (one decryption left); ``fresh``: one with two left; ``both``; ``all``."""
    spent = scene.round1_decryptors[0]
    fresh = next(m for m in scene.nodes if m not in scene.round1_decryptors)
    return {"spent": [spent], "fresh": [fresh], "both": [spent, fresh], "all": scene.nodes}[which]


def run_search(
    scene: Scene,
    worlds: dict[str, dict[int, tuple[int, ...]]],
    cls: type[CkksClient],
    depth: int,
    which: str | dict[str, str] = "both",
    stop_on_plan: bool = False,
) -> dict[str, Any]:
    """The search in each world; the plans, counts and releases (described) per world."""
    report: dict[str, Any] = {
        "plans": [], "tried": 0, "accepted": 0, "states": 0, "released": 0, "restarts": 0, "interleaved": 0, "resumed": 0,
        "untyped": [], "mutated": [], "releases": {},
        "streamed": {}, "full_checks": 0, "differing": [], "refusals": {},
    }
    for name, confirms in worlds.items():
        world = scene.world(name, confirms)
        chosen = which if isinstance(which, str) else which[name]
        stop = (lambda out: bool(plans(scene, out))) if stop_on_plan else None
        outcome = search(scene, world, _decryptors(scene, chosen), cls, depth, Outcome(), stop)
        found = plans(scene, outcome)
        report["plans"] += [f"[{name}] {p}" for p in found]
        for key in ("tried", "accepted", "states", "full_checks", "released", "restarts", "interleaved", "resumed"):
            report[key] += getattr(outcome, key)
        for error, count in outcome.refusals.items():
            report["refusals"][error] = report["refusals"].get(error, 0) + count
        report["untyped"] += outcome.untyped
        report["mutated"] += outcome.mutated
        report["differing"] += [f"[{name}] {_describe(scene, v)}" for v in outcome.differing]
        report["releases"][name] = {_describe(scene, v): how for v, how in outcome.releases.items()}
        report["streamed"][name] = {_describe(scene, v): how for (v, kind), how in outcome.witness.items() if kind == "stream"}
        if cls is CkksClient:
            check_live_replay(scene, world, outcome, cls)
        if stop_on_plan and found:
            break
    return report


def _summary(title: str, report: dict[str, Any], seconds: float) -> str:
    return (
        f"\n{title}: {report['tried']} messages to {report['states']} decryptor states, {report['accepted']} accepted, "
        f"{report['released']} decryptions released ({report['resumed']} streamed, {report['interleaved']} one-shot in the middle of "
        f"a stream), {report['restarts']} restarts of part 0 mid-stream, {report['full_checks']} full state-bytes checks of refusals, "
        f"{seconds:.1f} s; refusals {dict(sorted(report['refusals'].items()))}; "
        f"sets released: { {w: sorted(r) for w, r in report['releases'].items()} }"
    )


def _assert_clean(report: dict[str, Any]) -> None:
    assert report["plans"] == [], report["plans"]
    assert report["untyped"] == [], report["untyped"]
    assert report["mutated"] == [], report["mutated"]
    assert report["differing"] == [], report["differing"]


# ============================================================================ tests
@pytest.fixture(scope="module")
def scene42() -> Scene:
    return Scene(4, 2, seed=8)


@pytest.fixture(scope="module")
def real42(scene42: Scene) -> dict[str, Any]:
    started = time.perf_counter()
    report = run_search(scene42, WORLDS_4_2, CkksClient, depth=3, which={"whole set": "both", "two pairs": "fresh", "triple + whole": "spent"})
    report["seconds"] = time.perf_counter() - started
    return report


def test_no_plan_against_the_real_decryptor(real42: dict[str, Any]) -> None:
    report = real42
    print(_summary("review 8, n=4, min_contributions=2, up to 3 messages", report, report["seconds"]))
    _assert_clean(report)
    releases, streamed = report["releases"], report["streamed"]
    # the search reached the honest releases, streamed and in one shot, and nothing else
    assert set(releases["whole set"]) == {"A2+B2+C2+D2", "A1+B1+C1+D1"}
    assert set(releases["two pairs"]) == {"A2+B2", "C2+D2", "A1+B1+C1+D1"}
    assert set(releases["triple + whole"]) == {"A2+B2+C2", "A1+B1+C1+D1"}
    assert set(streamed["whole set"]) == {"A2+B2+C2+D2", "A1+B1+C1+D1"}
    assert set(streamed["two pairs"]) == {"A2+B2", "C2+D2", "A1+B1+C1+D1"}
    assert report["tried"] > 50_000 and report["restarts"] > 0 and report["interleaved"] > 0 and report["resumed"] > 0


def test_control_partial_stream_is_found(scene42: Scene) -> None:
    report = run_search(scene42, {"whole set": WORLDS_4_2["whole set"]}, DecryptsPartialStream, depth=2, which="fresh")
    print(_summary("control DecryptsPartialStream", report, 0.0), report["plans"])
    # P0[ABCD](A2) then DR1(B2) releases A2+B2, overlapping the whole set's release ...
    assert any("overlap" in p for p in report["plans"]), report["plans"]
    # ... and with P0[ABCD](A2,B2) then DR1(C2) (A2+B2+C2) the server solves for C2 alone
    assert any("alone" in p for p in report["plans"]), report["plans"]


def test_control_trusting_later_parts_is_found(scene42: Scene) -> None:
    report = run_search(scene42, {"two pairs": WORLDS_4_2["two pairs"]}, TrustsLaterParts, depth=2, which="fresh", stop_on_plan=True)
    print(_summary("control TrustsLaterParts", report, 0.0), report["plans"])
    # e.g. C's upload spliced into the stream of the confirmed pair {A, B}: A2+C2 overlaps both pairs
    assert any("overlap" in p or "two rounds" in p for p in report["plans"]), report["plans"]


# ---------------------------------------------------------------------------- slow: bigger and deeper
@pytest.mark.slow
@pytest.mark.parametrize(
    ("n", "minimum", "worlds"),
    [(4, 2, WORLDS_4_2), (4, 3, WORLDS_4_3), (3, 2, WORLDS_3_2), (3, 3, WORLDS_3_3)],
    ids=["n4-min2", "n4-min3", "n3-min2", "n3-min3"],
)
def test_slow_no_plan_every_decryptor_deeper(n: int, minimum: int, worlds: dict) -> None:
    scene = Scene(n, minimum, seed=20 + n + minimum)
    started = time.perf_counter()
    report = run_search(scene, worlds, CkksClient, depth=6, which="all")
    print(_summary(f"review 8 slow, n={n}, min_contributions={minimum}, up to 6 messages, every decryptor", report,
                   time.perf_counter() - started))
    _assert_clean(report)
    for name, confirms in worlds.items():
        honest = {"+".join(f"{LETTERS[m - 100]}2" for m in s) for s in set(confirms.values()) if all(confirms.get(m) == s for m in s)}
        assert set(report["releases"][name]) == honest | {"+".join(f"{LETTERS[i]}1" for i in range(n))}


@pytest.mark.slow
def test_slow_entry_match_is_a_second_line_of_defence(scene42: Scene) -> None:
    """Informative: without matching later parts to the entries, the set confirmations still bind every upload."""
    report = run_search(scene42, WORLDS_4_2, NoEntryMatchInLaterParts, depth=4, which="fresh")
    print(_summary("informative NoEntryMatchInLaterParts", report, 0.0))
    assert report["plans"] == [], report["plans"]
