"""Attacker review 10: a malicious server searches the streamed DECRYPT and the kept-aggregate
RECOVER of the threshold CKKS round with a roster (c86cefb, merged in 787b677).

c86cefb streams the confirmed set of signed uploads to every key holder: ``SumPart(0, entries,
first uploads)``, ``SumPart(k, (), uploads)`` ... (``SumAck`` each), then ``DecryptRequest(part=k,
last uploads)`` -> ``PartialDecryption``; a set of one part is ``DecryptRequest(part=0)``. After its
own partial decryption a holder *keeps* that aggregate (until its next upload), and a stand-in
(t-of-n) decrypts only the aggregate it kept: a ``RecoverRequest`` with a roster carries no sum.
The claim (:mod:`fedcrypt.he.threshold.round`, "Claim"): every partial decryption a node releases,
own share or as a stand-in, is of a sum of ``>= min_contributions`` uploads of distinct members in
one round; the sets released in one round are equal or disjoint; the server never gets one
upload or a difference of overlapping sums.

The scene (real nodes, :class:`he_threshold._round_harness.Federation`: three holders ``A B C`` =
nodes ``100 101 102`` = parties ``0 1 2``, 2-of-3 recovery, ``min_contributions = 2``, a roster).
Round 1 runs honestly (every holder decrypts ``A1+B1+C1`` and keeps it). The server then collects
key backups released for the stand-ins it will use (each helper releases for one dropped holder,
``n - t = 1``): ``B`` releases ``A``'s piece to ``C``, ``A`` releases ``B``'s piece to ``C`` and ``C``
releases ``A``'s piece to ``B`` -- so ``C`` can stand in for ``A`` and for ``B`` (one dropped holder
twice, the other once) and ``B`` for ``A``. Round 2: fresh uploads, and the server spends each
node's one confirmation in one of several *worlds*:

* ``all``: everyone confirms ``{A2, B2, C2}``;
* ``pair``: ``A`` and ``B`` confirm ``{A2, B2}``, ``C`` confirms ``{A2, B2, C2}`` (a set that can never
  be complete, but ``C2`` carries a valid confirmation of it);
* ``noC``: ``C`` is not asked to upload in round 2 (so it still keeps round 1's aggregate while
  round 2 runs); ``A`` and ``B`` confirm ``{A2, B2}``.

Every decryptor (slow: every holder) starts at its state after CONFIRM, with an input set for a
later round. The server's alphabet, from real pieces only (every round-2 upload with its node's
confirmation, every round-1 upload with its round-1 confirmation, the released backups):

* ``SumPart(0, E, batch)`` for entry lists ``E``: each confirmed set in both orders, the whole
  round-2 set, every pair, the round-1 set (cross-round), the whole set with ``A``'s round-1
  digest, a confirmed set plus the missing member's round-1 entry;
* ``SumPart(k, (), batch)`` for ``k`` in 1, 2 and ``DecryptRequest(part=k, batch)`` for ``k`` in
  0, 1, 2 (``k = 0`` is the one-shot request, interleaved with the streams);
* ``batch``: every single piece, every ordered pair and triple of round-2 uploads, every
  (round-2, round-1) pair (so every honest partition of every set into parts, splices of other
  sets' and rounds' uploads, and part-0 restarts with other entries are sequences of it);
* replays: round 1's set in one shot and streamed, round 2's set relabelled round 3;
* ``RecoverRequest(r, d, released)`` for rounds 1, 2, 3, every other holder ``d``, with no piece,
  each piece, and every piece; and the same carrying a server-made aggregate (the sum of
  ``B2+C2``, ``A2+B2``, ``A2+B2+C2``, ``A1+B1+C1``), which the real node must refuse;
* ``EncryptRequest`` of round 3 (a later upload, which must drop the kept aggregate).

A breadth-first search over the decryptor's *state bytes* sends every message to every state
reached, up to ``depth`` messages: after every accepted message the node is rebuilt with
``ThresholdClient.from_state_bytes`` (so every message meets a node that went through its state
bytes: "state bytes rebuilt between messages"), and after every refusal the same object goes on
(its ``to_state_bytes()`` must be unchanged and the error a ``FedcryptError``). So stand-ins asked
for a round they kept nothing for, for an older round, after a later upload, for a dropped
holder twice (``C`` for ``A`` then ``B``, and for ``A`` again), after a stream that stopped half way,
and one-shot requests in the middle of a stream are all paths of it.

Oracle: every ``PartialDecryption`` released is parsed (party, SHA-256 of the aggregate); a
catalogue of the aggregates of every ordered selection of 1 to 3 of the six uploads (the
holders' own ``ThresholdSum``) names it. A *plan* is a release whose aggregate is not the sum of
a set that every member of it confirmed (any round, ``>= min_contributions``), or is unknown.
Within a world the fully confirmed sets of a round are equal or disjoint by construction (each
node confirms once), so no plan means the releases (which the server fuses per aggregate digest,
or subtracts for equal digests of other rounds) never give one upload, a mixed-round sum or
the difference of overlapping sums. Every plan is replayed on a live node (no rebuilds).

Bounds (default): worlds ``all`` (decryptors ``B``, ``C``), ``pair`` (``C``), ``noC`` (``C``), depth 3:
some 480 messages in each alphabet, 33,019 messages to 78 decryptor states (every accepted
state rebuilt), about 50 s under ``nice`` (the module about 75 s). ``@pytest.mark.slow``: every
holder of every world, depth 4: 115,849 messages to 274 decryptor states, about 3 min.

* **Result: no plan** against the real ThresholdClient (see the assertions and the report in the
  test output: accepted paths include the one-shot and streamed own decryption, the stand-in's
  decryption of its kept round-2 set for each dropped holder, and in ``noC`` the non-uploader's
  stand-in decryption of its kept round-1 set while round 2 runs); every refusal is a typed
  ``FedcryptError`` that leaves the state bytes as they were.
* **Positive controls** (the search finds plans): a stand-in that decrypts a sum the server sends
  (``StandInDecryptsGivenSum``: ``R2 d=A +agg(B2+C2)`` overlaps ``{A2,B2,C2}``); a holder that checks
  part 0 and trusts later parts (``TrustsLaterParts``: ``P0[AB](A2)`` then ``D1(C2)``); a stand-in that,
  having kept nothing of this round, decrypts its open stream's running sum
  (``StandInUsesRunningSum``: ``P0[ABC](A2,B2)`` then ``R2 d=A``).
* **Break (availability, not the claim; FIXED, the tests below now pass):** the kept aggregate (and an open
  stream) survive a ``KeygenRequest`` of a new session, and ``_state._check_sums`` then refuses the
  node's own state bytes (``MalformedMessageError``: "a streamed or kept sum without a roster or a
  key" until JOINT, "does not decode ... another threshold key" after it). Every holder of a
  roster round keeps an aggregate, so after an *honest* new session no node rebuilds from its
  state bytes, and the Flower mod (which rebuilds the node for every message) cannot answer the
  JointRequest or anything later. Fixed: ``_on_keygen_request`` drops ``_stream`` and ``_kept``.
  The search itself checks that every accepted state rebuilds.
* **Observation (not a break of the claim):** one holder's share of one aggregate can be released
  several times with independent flooding: its own, and by each stand-in that holds a released
  piece for it (``C`` and ``B`` each stand in for ``A``, every round, with pieces released once per
  session); ``KeyHolder`` answers each aggregate once per (holder, share made) only. The fused
  plaintext is the same set's sum; the extra samples let the server average that one holder's
  flooding noise. Recorded by ``test_observation_one_share_of_one_set_released_by_several_nodes``.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcrypt.errors import FedcryptError

openfhe = pytest.importorskip("openfhe", reason="threshold CKKS needs openfhe (CPython 3.10)")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "he_threshold"))

from _round_harness import D, Federation, M  # noqa: E402

from fedcrypt.he.threshold import ThresholdSum  # noqa: E402
from fedcrypt.he.threshold.round import (  # noqa: E402
    ConfirmedUpload,
    ConfirmRequest,
    DecryptRequest,
    EncryptRequest,
    KeygenRequest,
    PartialDecryption,
    RecoverRequest,
    ReleaseRequest,
    Stage,
    SumPart,
    ThresholdClient,
    Upload,
)

NODES = (100, 101, 102)
LETTER = {100: "A", 101: "B", 102: "C"}


# ============================================================================ weakened holders
class StandInDecryptsGivenSum(ThresholdClient):
    """Control: with a roster, a stand-in decrypts the aggregate a RecoverRequest carries (the old rule)."""

    __slots__ = ()

    def _on_recover_request(self, message: RecoverRequest) -> PartialDecryption:
        if self.config.roster is None or not message.aggregate:
            return super()._on_recover_request(message)
        holder = self._check_dropped(message.dropped, message)
        last = self._recovered.get(message.dropped)
        if last is not None and message.round_id <= last:
            raise self._unexpected("once per round", message)
        released = [self._open_backup(signed, message) for signed in message.released]
        share = holder.recover_share(message.dropped, message.aggregate, released)
        reply = PartialDecryption(message.round_id, self.node, share.to_bytes())
        self._recovered[message.dropped] = message.round_id
        return reply


class StandInUsesRunningSum(ThresholdClient):
    """Control: a stand-in that kept nothing of this round decrypts the sum of its open stream."""

    __slots__ = ()

    def _on_recover_request(self, message: RecoverRequest) -> PartialDecryption:
        stream = self._stream
        if (self._kept is not None and self._kept[0] == message.round_id) or stream is None or stream[0] != message.round_id:
            return super()._on_recover_request(message)
        holder = self._check_dropped(message.dropped, message)
        last = self._recovered.get(message.dropped)
        if last is not None and message.round_id <= last:
            raise self._unexpected("once per round", message)
        released = [self._open_backup(signed, message) for signed in message.released]
        share = holder.recover_share(message.dropped, stream[4].copy().finish(), released)
        reply = PartialDecryption(message.round_id, self.node, share.to_bytes())
        self._recovered[message.dropped] = message.round_id
        return reply


class TrustsLaterParts(ThresholdClient):
    """Control: part 0 is checked in full; later parts only have to be uploads under the key (no entry,
    signature, confirmation or round check)."""

    __slots__ = ()

    def _fold(self, message: Any, entries: Any, start: int, layout: bytes | None) -> Any:
        if start == 0:
            return super()._fold(message, entries, start, layout)
        if start + len(message.uploads) > len(entries):
            raise self._violation("too many uploads", message)
        holder = self._require_holder()
        summed = ThresholdSum.under(self.config.params, holder.fingerprint, holder.key_tag)
        for item in message.uploads:
            summed.add(item.upload.blob, self.config.max_weight)
        return summed, layout


# ============================================================================ the scene
@dataclass(frozen=True)
class Piece:
    label: str  # "A2": node A's round-2 upload
    item: ConfirmedUpload


@dataclass
class World:
    name: str
    states: dict[int, bytes]
    pieces: list[Piece]  # round 2 then round 1
    confirmed: list[tuple[int, frozenset[str]]]  # (round, labels) confirmed by every member in it
    uploaders2: tuple[int, ...]


@dataclass
class Scene:
    fed: Federation
    worlds: dict[str, World]
    released: list[tuple[str, Any]]  # ("A>C", SignedBackup): A's piece sealed to stand-in C
    catalogue: dict[bytes, tuple[str, ...]]  # aggregate digest -> ordered labels
    aggregates: dict[str, bytes]  # control aggregates by label
    fingerprint: bytes


def _entry(upload: Upload) -> tuple[str, int, bytes]:
    return (upload.member, upload.node, hashlib.sha256(upload.blob).digest())


def _sum(fed: Federation, blobs: list[bytes]) -> bytes:
    holder = fed.clients[100]._holder
    total = ThresholdSum.under(fed.config.params, holder.fingerprint, holder.key_tag)
    for blob in blobs:
        total.add(blob, M)
    return total.finish()


def build_scene(seed: int = 10) -> Scene:
    fed = Federation(roster=True, recovery=2, min_contributions=2, seed=seed)
    _, log1 = fed.run(1)
    up1: dict[int, Upload] = dict(log1.replies[Stage.ENCRYPT])
    conf1 = {node: c.signature for node, c in log1.replies[Stage.CONFIRM].items()}
    fingerprint = fed.clients[100]._holder.fingerprint
    # the backup pieces the server collects (each helper: one dropped holder per session, n - t = 1)
    released = [
        ("A>C", fed.clients[101].handle(ReleaseRequest(1, 101, 0, 2)).backup),  # B: A's piece, to C
        ("B>C", fed.clients[100].handle(ReleaseRequest(1, 100, 1, 2)).backup),  # A: B's piece, to C
        ("A>B", fed.clients[102].handle(ReleaseRequest(1, 102, 0, 1)).backup),  # C: A's piece, to B
    ]
    after1 = fed.snapshot()
    rng = np.random.default_rng(seed + 1)
    up2: dict[int, Upload] = {}
    for node in NODES:
        fed.clients[node].set_input(rng.uniform(-1, 1, D), float(rng.integers(1, 9)))
        up2[node] = fed.clients[node].handle(EncryptRequest(2, node, fingerprint))
    after_up2 = fed.snapshot()

    def world(name: str, uploaders: tuple[int, ...], confirm: dict[int, tuple[int, ...]]) -> World:
        fed.restore({n: (after_up2[n] if n in uploaders else after1[n]) for n in NODES})
        signatures: dict[int, bytes] = {}
        sets: dict[tuple[int, ...], set[int]] = collections.defaultdict(set)
        for node, members in confirm.items():
            reply = fed.clients[node].handle(ConfirmRequest(2, node, tuple(_entry(up2[m]) for m in members)))
            signatures[node] = reply.signature
            sets[members].add(node)
        for node in NODES:
            fed.clients[node].set_input(rng.uniform(-1, 1, D), 4.0)  # an input for a later round's upload
        pieces = [Piece(f"{LETTER[n]}2", ConfirmedUpload(up2[n], signatures.get(n, b""))) for n in uploaders]
        pieces += [Piece(f"{LETTER[n]}1", ConfirmedUpload(up1[n], conf1[n])) for n in NODES]
        confirmed = [(1, frozenset(f"{LETTER[n]}1" for n in NODES))]
        confirmed += [(2, frozenset(f"{LETTER[m]}2" for m in members)) for members, by in sets.items() if by == set(members)]
        return World(name, fed.snapshot(), pieces, confirmed, uploaders)

    worlds = {
        "all": world("all", NODES, {n: NODES for n in NODES}),
        "pair": world("pair", NODES, {100: (100, 101), 101: (100, 101), 102: NODES}),
        "noC": world("noC", (100, 101), {100: (100, 101), 101: (100, 101)}),
    }
    for w in worlds.values():  # each node confirms once: the fully confirmed sets of a round are equal or disjoint
        for (r1, s1), (r2, s2) in itertools.combinations(w.confirmed, 2):
            assert r1 != r2 or s1 == s2 or not (s1 & s2)
    fed.restore(after1)
    labelled = {f"{LETTER[n]}2": up2[n].blob for n in NODES} | {f"{LETTER[n]}1": up1[n].blob for n in NODES}
    catalogue: dict[bytes, tuple[str, ...]] = {}
    for k in (1, 2, 3):
        for combo in itertools.permutations(sorted(labelled), k):
            catalogue.setdefault(hashlib.sha256(_sum(fed, [labelled[x] for x in combo])).digest(), combo)
    aggregates = {
        "B2+C2": _sum(fed, [labelled["B2"], labelled["C2"]]),
        "A2+B2": _sum(fed, [labelled["A2"], labelled["B2"]]),
        "A2+B2+C2": _sum(fed, [labelled["A2"], labelled["B2"], labelled["C2"]]),
        "A1+B1+C1": _sum(fed, [labelled["A1"], labelled["B1"], labelled["C1"]]),
    }
    return Scene(fed, worlds, released, catalogue, aggregates, fingerprint)


# ============================================================================ the alphabet
def alphabet(scene: Scene, world: World, node: int) -> list[tuple[str, bytes]]:
    """Every message the server can send ``node`` from the world's real pieces, with a label."""
    r2 = [p for p in world.pieces if p.label.endswith("2")]
    r1 = [p for p in world.pieces if p.label.endswith("1")]
    ent = {p.label: _entry(p.item.upload) for p in world.pieces}

    def name(labels: Any) -> str:
        return ",".join(labels)

    entry_lists: dict[str, tuple] = {}
    for rnd, labels in world.confirmed:
        if rnd == 2:
            order = sorted(labels)
            entry_lists[name(order)] = tuple(ent[x] for x in order)
            entry_lists[name(order[::-1])] = tuple(ent[x] for x in order[::-1])
            missing = [f"{LETTER[n]}1" for n in NODES if f"{LETTER[n]}2" not in labels]
            if missing:  # a confirmed set plus the missing member's round-1 entry
                entry_lists[name(order + missing[:1])] = tuple(ent[x] for x in order + missing[:1])
    whole = [p.label for p in r2]
    entry_lists.setdefault(name(whole), tuple(ent[x] for x in whole))
    for a, b in itertools.combinations(whole, 2):
        entry_lists.setdefault(name((a, b)), (ent[a], ent[b]))
    entry_lists[name(p.label for p in r1)] = tuple(ent[p.label] for p in r1)  # the round-1 set (cross-round)
    if "A2" in ent:
        swapped = ["A1"] + [x for x in whole if x != "A2"]
        entry_lists[name(swapped)] = tuple(ent[x] for x in swapped)  # A's round-1 digest in the round-2 set

    batches: dict[str, tuple[Piece, ...]] = {p.label: (p,) for p in world.pieces}
    for k in (2, 3):
        for combo in itertools.permutations(r2, k):
            batches[name(p.label for p in combo)] = combo
    for p in r2:
        for q in r1:
            batches[name((p.label, q.label))] = (p, q)

    out: list[tuple[str, Any]] = []
    for ename, entries in entry_lists.items():
        for bname, batch in batches.items():
            out.append((f"P0[{ename}]({bname})", SumPart(2, node, 0, entries, tuple(p.item for p in batch))))
    for bname, batch in batches.items():
        items = tuple(p.item for p in batch)
        for k in (1, 2):
            out.append((f"P{k}({bname})", SumPart(2, node, k, (), items)))
        for k in (0, 1, 2):
            out.append((f"D{k}({bname})", DecryptRequest(2, node, b"", items, k)))
    # replays: round 1's set (one shot and streamed), round 2's relabelled as round 3
    one = tuple(p.item for p in r1)
    out.append(("r1:D0(A1,B1,C1)", DecryptRequest(1, node, b"", one, 0)))
    out.append(("r1:P0[A1,B1,C1](A1)", SumPart(1, node, 0, tuple(_entry(i.upload) for i in one), one[:1])))
    two = tuple(p.item for p in r2)
    out.append(("r3:D0(round 2)", DecryptRequest(3, node, b"", two, 0)))
    out.append(("r3:P0[round 2](first)", SumPart(3, node, 0, tuple(_entry(i.upload) for i in two), two[:1])))
    # RECOVER: every round, every other holder, each piece / none / all, with and without an aggregate
    party = node - 100
    pieces = [("none", ())] + [(lab, (b,)) for lab, b in scene.released] + [("all", tuple(b for _, b in scene.released))]
    sums = [("", b"")] + [(f" +agg({k})", v) for k, v in scene.aggregates.items()]
    for rnd in (1, 2, 3):
        for dropped in (p for p in range(3) if p != party):
            for pname, released in pieces:
                for sname, aggregate in sums:
                    out.append((f"r{rnd}:R d={'ABC'[dropped]} [{pname}]{sname}", RecoverRequest(rnd, node, dropped, released, aggregate)))
    out.append(("E3", EncryptRequest(3, node, scene.fingerprint)))
    return [(label, message.to_bytes()) for label, message in out]


# ============================================================================ the search
@dataclass
class Report:
    messages: int = 0
    states: int = 0
    accepted: collections.Counter = field(default_factory=collections.Counter)
    refusals: collections.Counter = field(default_factory=collections.Counter)
    releases: collections.Counter = field(default_factory=collections.Counter)  # (own/stand-in, labels)
    plans: list[tuple[str, str, tuple[str, ...], str]] = field(default_factory=list)
    untyped: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    changed: list[tuple[str, ...]] = field(default_factory=list)
    unrestorable: list[tuple[tuple[str, ...], str]] = field(default_factory=list)


def classify(scene: Scene, world: World, share: bytes, round_id: int) -> tuple[int, tuple[str, ...] | None, bool]:
    """(party of the share, the ordered labels of its aggregate or None, legit)."""
    _, _, _, party, digest, _ = struct.unpack(">4sB32sH32sI", share[:75])
    labels = scene.catalogue.get(digest)
    if labels is None:
        return party, None, False
    members = frozenset(labels)
    rounds = {x[-1] for x in labels}
    legit = len(rounds) == 1 and len(labels) >= scene.fed.config.min_contributions and any(s == members for _, s in world.confirmed)
    return party, labels, legit


def search(scene: Scene, world: World, node: int, cls: type[ThresholdClient], depth: int, report: Report) -> None:
    fed = scene.fed
    letters = alphabet(scene, world, node)
    start = world.states[node]
    frontier: list[tuple[bytes, tuple[str, ...]]] = [(start, ())]
    seen = {hashlib.sha256(start).digest()}
    for _level in range(depth):
        following: list[tuple[bytes, tuple[str, ...]]] = []
        for state, path in frontier:
            report.states += 1
            client = cls.from_state_bytes(state, config=fed.config, identity=fed.identity(node))
            for label, raw in letters:
                if label == "E3" and "E3" in path:
                    continue
                report.messages += 1
                try:
                    reply = client.handle(raw)
                except FedcryptError as exc:
                    report.refusals[type(exc).__name__] += 1
                    if client.to_state_bytes() != state:
                        report.changed.append(path + (label,))
                        client = cls.from_state_bytes(state, config=fed.config, identity=fed.identity(node))
                    continue
                except Exception as exc:  # noqa: BLE001 - the finding is that it is not typed
                    report.untyped.append((path + (label,), f"{type(exc).__name__}: {exc}"))
                    client = cls.from_state_bytes(state, config=fed.config, identity=fed.identity(node))
                    continue
                report.accepted[type(reply).__name__] += 1
                new_path = path + (label,)
                if isinstance(reply, PartialDecryption):
                    party, labels, legit = classify(scene, world, reply.share, reply.round_id)
                    kind = "own" if party == node - 100 else f"stand-in for {'ABC'[party]}"
                    what = "+".join(sorted(labels)) if labels else "UNKNOWN"
                    report.releases[(world.name, LETTER[node], kind, what)] += 1
                    if not legit:
                        report.plans.append((world.name, LETTER[node], new_path, f"{kind}: {what}"))
                new_state = client.to_state_bytes()
                key = hashlib.sha256(new_state).digest()
                if key not in seen:
                    seen.add(key)
                    try:  # every accepted message's state must rebuild (the next message meets the rebuilt node)
                        cls.from_state_bytes(new_state, config=fed.config, identity=fed.identity(node))
                    except FedcryptError as exc:
                        report.unrestorable.append((new_path, f"{type(exc).__name__}: {exc}"))
                    else:
                        following.append((new_state, new_path))
                client = cls.from_state_bytes(state, config=fed.config, identity=fed.identity(node))
        frontier = following


def replay(scene: Scene, world: World, node: int, cls: type[ThresholdClient], path: tuple[str, ...]) -> list[str]:
    """Send ``path`` to one live node (no rebuilds, wire bytes); what each message got."""
    letters = dict(alphabet(scene, world, node))
    client = cls.from_state_bytes(world.states[node], config=scene.fed.config, identity=scene.fed.identity(node))
    got = []
    for label in path:
        try:
            reply = client.handle(letters[label])
        except FedcryptError as exc:
            got.append(type(exc).__name__)
            continue
        if isinstance(reply, PartialDecryption):
            _, labels, legit = classify(scene, world, reply.share, reply.round_id)
            got.append(f"release {'+'.join(sorted(labels or ('?',)))} legit={legit}")
        else:
            got.append(type(reply).__name__)
    return got


# ============================================================================ tests


@pytest.fixture(scope="module")
def scene() -> Scene:
    return build_scene()


DEFAULT_PLAN = (("all", 101), ("all", 102), ("pair", 102), ("noC", 102))


def _run(scene: Scene, cls: type[ThresholdClient], plan: Any, depth: int) -> Report:
    report = Report()
    for wname, node in plan:
        search(scene, scene.worlds[wname], node, cls, depth, report)
    return report


def _summary(report: Report, took: float) -> str:
    lines = [
        f"{report.messages} messages to {report.states} decryptor states in {took:.1f} s",
        f"accepted: {dict(report.accepted)}",
        f"refusals: {dict(report.refusals)}",
        "releases: " + "; ".join(f"{w}/{n} {k} {what} x{c}" for (w, n, k, what), c in sorted(report.releases.items())),
    ]
    return "\n".join(lines)


def _check_real(scene: Scene, report: Report) -> None:
    assert not report.untyped, report.untyped[:5]
    assert not report.changed, report.changed[:5]
    assert not report.unrestorable, report.unrestorable[:5]
    for world, node, path, what in report.plans[:3]:
        print("PLAN", world, node, path, what, replay(scene, scene.worlds[world], 100 + "ABC".index(node), ThresholdClient, path))
    assert not report.plans, report.plans[:5]
    # the search reached the releases it is about (else "no plan" says nothing)
    kinds = {(w, n, k, what) for (w, n, k, what) in report.releases}
    assert ("all", "C", "own", "A2+B2+C2") in kinds and ("all", "B", "own", "A2+B2+C2") in kinds
    assert any(w == "all" and n == "C" and k == "stand-in for A" for (w, n, k, _) in kinds)
    assert any(w == "all" and n == "C" and k == "stand-in for B" for (w, n, k, _) in kinds)  # one round, two dropped holders
    assert any(w == "all" and n == "B" and k == "stand-in for A" for (w, n, k, _) in kinds)
    assert any(w == "pair" and n == "C" and k == "own" and set(x.split("+")) == {"A2", "B2"} for (w, n, k, x) in kinds)
    assert any(w == "noC" and n == "C" and k.startswith("stand-in") and set(x.split("+")) == {"A1", "B1", "C1"} for (w, n, k, x) in kinds)
    assert any(w == "noC" and n == "C" and k.startswith("stand-in") and set(x.split("+")) == {"A2", "B2"} for (w, n, k, x) in kinds)
    assert report.accepted["SumAck"] and report.accepted["Upload"]


def test_search_finds_no_plan_against_the_real_holder(scene: Scene) -> None:
    began = time.monotonic()
    report = _run(scene, ThresholdClient, DEFAULT_PLAN, depth=3)
    print(_summary(report, time.monotonic() - began))
    _check_real(scene, report)


@pytest.mark.slow
def test_search_finds_no_plan_against_the_real_holder_every_node_depth_4(scene: Scene) -> None:
    began = time.monotonic()
    plan = [(w, n) for w in ("all", "pair", "noC") for n in NODES]
    report = _run(scene, ThresholdClient, plan, depth=4)
    print(_summary(report, time.monotonic() - began))
    _check_real(scene, report)


@pytest.mark.parametrize(
    ("cls", "plan", "depth", "witness"),
    [
        (StandInDecryptsGivenSum, (("all", 102),), 1, ("all", "C", ("r2:R d=A [A>C] +agg(B2+C2)",), "stand-in for A: B2+C2")),
        (TrustsLaterParts, (("pair", 102),), 2, ("pair", "C", ("P0[A2,B2](A2)", "D1(C2)"), "own: A2+C2")),
        (StandInUsesRunningSum, (("all", 102),), 2, ("all", "C", ("P0[A2,B2,C2](A2,B2)", "r2:R d=A [A>C]"), "stand-in for A: A2+B2")),
    ],
    ids=["stand-in-decrypts-given-sum", "trusts-later-parts", "stand-in-uses-running-sum"],
)
def test_positive_control_search_finds_a_plan(scene: Scene, cls: type[ThresholdClient], plan: Any, depth: int, witness: Any) -> None:
    report = _run(scene, cls, plan, depth)
    assert report.plans, _summary(report, 0)
    assert witness in report.plans, report.plans[:10]
    world, node, path, _ = witness
    got = replay(scene, scene.worlds[world], 100 + "ABC".index(node), cls, path)
    assert got[-1].startswith("release") and got[-1].endswith("legit=False"), got
    real = replay(scene, scene.worlds[world], 100 + "ABC".index(node), ThresholdClient, path)
    assert not real[-1].startswith("release"), real  # the real holder refuses the last message


def test_observation_one_share_of_one_set_released_by_several_nodes(scene: Scene) -> None:
    """Not a break of the claim: holder A's share of the round-2 set goes out from A, from stand-in B
    and from stand-in C, each with its own flooding (three samples of one (party, aggregate))."""
    world = scene.worlds["all"]
    shares: dict[int, bytes] = {}
    for node, path in ((100, ("D0(A2,B2,C2)",)), (101, ("D0(A2,B2,C2)", "r2:R d=A [A>B]")), (102, ("D0(A2,B2,C2)", "r2:R d=A [A>C]"))):
        letters = dict(alphabet(scene, world, node))
        client = ThresholdClient.from_state_bytes(world.states[node], config=scene.fed.config, identity=scene.fed.identity(node))
        for label in path:
            reply = client.handle(letters[label])
        assert isinstance(reply, PartialDecryption)
        party, labels, legit = classify(scene, world, reply.share, 2)
        assert party == 0 and legit and set(labels or ()) == {"A2", "B2", "C2"}
        shares[node] = reply.share
    assert len({s[75:] for s in shares.values()}) == 3  # three independent flooding samples of party 0's share


def test_state_bytes_after_a_new_session_rebuild() -> None:
    """An honest new session in round 2, every node rebuilt from its state bytes before every message
    (what the Flower mod does). Was a break (the kept aggregate survived a KeygenRequest and the
    state bytes no longer decoded); fixed: a new session drops the old key's stream and kept sum."""
    fed = Federation(roster=True, recovery=2, min_contributions=2, seed=21)
    fed.run(1)  # every holder now keeps round 1's aggregate
    fed.session = None  # the server starts a new session (KEYGEN, JOINT, BACKUP again)
    server = fed.server(2)
    requests = server.begin()
    rng = np.random.default_rng(5)
    while requests:
        stage = server.stage
        for node in sorted(requests):
            client = ThresholdClient.from_state_bytes(fed.clients[node].to_state_bytes(), config=fed.config, identity=fed.identity(node))
            if stage is Stage.ENCRYPT:
                client.set_input(rng.uniform(-1, 1, D), 2.0)
            reply = client.handle(requests[node].to_bytes())
            fed.clients[node] = client
            server.receive(reply.to_bytes(), sender=node)
        requests = server.end_stage()
    assert server.stage is Stage.DONE


def test_the_same_new_session_without_rebuilds_completes() -> None:
    """The xfail above is about the state bytes only: the same rounds on live objects complete."""
    fed = Federation(roster=True, recovery=2, min_contributions=2, seed=21)
    fed.run(1)
    fed.session = None
    server, _ = fed.run(2)
    assert server.stage is Stage.DONE
    client = fed.clients[100]
    assert client._kept is not None and client._kept[0] == 2  # (restorable again once a round of the new session is decrypted)
    ThresholdClient.from_state_bytes(client.to_state_bytes(), config=fed.config, identity=fed.identity(100))


def test_one_keygen_request_after_a_kept_aggregate_leaves_restorable_state_bytes(scene: Scene) -> None:
    world = scene.worlds["noC"]
    client = ThresholdClient.from_state_bytes(world.states[102], config=scene.fed.config, identity=scene.fed.identity(102))
    assert client._kept is not None and client._kept[0] == 1  # C did not upload in round 2: it keeps round 1's aggregate
    reply = client.handle(KeygenRequest(2, 102, hashlib.sha256(b"another session").digest(), 0, (102, 100, 101), None).to_bytes())
    assert type(reply).__name__ == "KeygenReply"
    ThresholdClient.from_state_bytes(client.to_state_bytes(), config=scene.fed.config, identity=scene.fed.identity(102))
