"""A malicious server searches for a decryption plan against real threshold round nodes (with a roster).

The project's rule: a defence counts only when an attacker that searches for a plan finds
none, with a positive control. The server here holds everything an actual malicious server
would: the signed uploads of two rounds (the first decrypted honestly), every confirmation it
can get from the real nodes, a stand-in's released backup piece, and the freedom to relabel
any upload under any node's name and signature, to move uploads of the first round into the
second, and to list them in any order. Three key holders (2-of-3 backup), ``min_contributions = 2``.

* Search 1 (one partial decryption): every request of one to three uploads (each in two
  orders), for round 2 and for round 1, each with the best confirmations the server can
  collect for it (the real nodes are asked to confirm exactly that set), sent to a key holder
  as DECRYPT and to a stand-in as DECRYPT then RECOVER (holder 102's share of the sum the
  stand-in kept, with a real released piece: a RecoverRequest carries no sum of its own).
  No request is answered unless it is a set of at least ``min_contributions`` genuine uploads
  of one round by distinct nodes (and in round 1, only the set already released).
* Search 2 (several sums in one round): every way for the server to spend the nodes' one
  confirmation per round (each node confirms one set of its choosing, or none); the sets for
  which the server gets partial decryptions (from a holder and from a stand-in) must be equal
  or disjoint (no difference of two overlapping sums isolates an upload), the first round's
  release included.

Positive controls: the same searches find a plan against a key holder whose signature checks
are switched off (search 1: a relabelled or replayed upload is decrypted) and against one that
checks upload signatures but not confirmations (search 2: overlapping sets).
Real OpenFHE (CPython 3.10; skipped elsewhere, see conftest.py).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from fedcrypt.errors import FedcryptError
from fedcrypt.he.threshold.round import (
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    DecryptRequest,
    PartialDecryption,
    RecoverRequest,
    ReleaseRequest,
    Stage,
    ThresholdClient,
    Upload,
)

pytestmark = pytest.mark.usefixtures("openfhe")
sys.path.insert(0, str(Path(__file__).parent))

from _round_harness import Federation  # noqa: E402
from _round_search_kit import Item, Oracle, content, leak, search_overlaps  # noqa: E402

MIN = 2
HOLDER, STAND_IN, DROPPED = 101, 100, 2  # holder 101 decrypts; node 100 stands in for party 2 (node 102)


class NoSignatureChecks(ThresholdClient):
    """Control: a key holder that believes every label (no upload or confirmation signature checked)."""

    __slots__ = ()

    def _verify_uploads(self, *args: Any) -> None:
        return None

    def _verify_confirmations(self, *args: Any) -> None:
        return None


class NoConfirmationCheck(ThresholdClient):
    """Control: signed uploads only (the design the set confirmation fixes)."""

    __slots__ = ()

    def _verify_confirmations(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def scene(openfhe: Any) -> dict[str, Any]:
    fed = Federation(3, roster=True, recovery=2, min_contributions=MIN, seed=5)
    _, first = fed.run(1)
    _, second = fed.run(2, until=Stage.CONFIRM)
    released = fed.clients[101].handle(ReleaseRequest(2, 101, DROPPED, 0)).backup  # helper 101's piece of 102's share
    old: dict[int, Upload] = first.replies[Stage.ENCRYPT]
    new: dict[int, Upload] = second.replies[Stage.ENCRYPT]
    items = [Item(u, n, 2) for n, u in sorted(new.items())]
    items += [Item(u, n, 1) for n, u in sorted(old.items())]
    # relabelled: one node's blob under another node's name, node id and signature
    items += [
        Item(Upload(2, new[v].node, new[u].blob, new[u].layout, new[v].member, new[v].signature), u, 2)
        for u in sorted(new) for v in sorted(new) if u != v
    ]
    # replayed: the first round's uploads moved into the second, under their own or another node's name
    items += [Item(Upload(2, o.node, o.blob, o.layout, o.member, o.signature), n, 1) for n, o in sorted(old.items())]
    items += [
        Item(Upload(2, new[v].node, old[u].blob, old[u].layout, new[v].member, new[v].signature), u, 1)
        for u in sorted(old) for v in sorted(new) if u != v
    ]
    return {
        "fed": fed,
        "items": items,
        "released": released,
        "old_set": frozenset((n, 1) for n in old),
        "old_confirmations": {c.member: c.signature for c in first.replies[Stage.CONFIRM].values()},
        "nodes": sorted(new),
    }


def _requests(scene: dict[str, Any], round_id: int, uploads: tuple[ConfirmedUpload, ...]) -> list[tuple[int, list[Any]]]:
    """The same sum asked of the key holder (DECRYPT, its own share) and of the stand-in (DECRYPT
    with its own share, then RECOVER: 102's share of the sum it kept; a RecoverRequest names no sum)."""
    return [
        (HOLDER, [DecryptRequest(round_id, HOLDER, b"", uploads)]),
        (STAND_IN, [DecryptRequest(round_id, STAND_IN, b"", uploads), RecoverRequest(round_id, STAND_IN, DROPPED, (scene["released"],))]),
    ]


def _ask(oracle: Oracle, node: int, requests: list[Any]) -> Any:
    """The last reply of ``node`` to ``requests`` in turn (None at the first refusal); the node is rebuilt after."""
    client, reply = oracle.live[node], None
    try:
        for request in requests:
            reply = client.handle(request)
    except FedcryptError:
        reply = None
    oracle.live[node] = oracle._fresh(node)
    return reply


def _search_one(
    scene: dict[str, Any], cls: type[ThresholdClient], stop_at: str | None = None
) -> tuple[list[str], dict[frozenset, set[str]], list[tuple[Item, ...]], int]:
    """Search 1: the plans found, who confirms which entry set, the round-2 sets decrypted, requests tried.

    ``stop_at``: stop at the first plan whose reason contains these words.
    """
    fed, items = scene["fed"], scene["items"]
    confirmers = Oracle(fed, scene["nodes"], ThresholdClient)
    decryptors = Oracle(fed, [HOLDER, STAND_IN], cls)
    signed_by: dict[frozenset, set[str]] = {}
    decrypted: list[tuple[Item, ...]] = []
    plans: list[str] = []
    tried = 0
    for size in (1, 2, 3):
        for chosen in itertools.combinations(items, size):
            entries = tuple(it.entry for it in chosen)
            confirmations: dict[str, bytes] = {}
            for member, node, _ in entries:
                if member in confirmations or node not in confirmers.live:
                    continue
                reply = confirmers.ask(node, ConfirmRequest(2, node, entries))
                if isinstance(reply, Confirmation):
                    confirmations[member] = reply.signature
                    signed_by.setdefault(frozenset(entries), set()).add(member)
            for order in (chosen, chosen[::-1]) if size > 1 else (chosen,):
                for round_id, sigs in ((2, confirmations), (1, scene["old_confirmations"])):
                    uploads = tuple(ConfirmedUpload(it.upload, sigs.get(it.upload.member, b"")) for it in order)
                    for node, request in _requests(scene, round_id, uploads):
                        tried += 1
                        if not isinstance(_ask(decryptors, node, request), PartialDecryption):
                            continue
                        if round_id == 2 and order is chosen and node == HOLDER:
                            decrypted.append(chosen)
                        why = leak(order, scene["old_set"], MIN)
                        if why is not None:
                            plans.append(f"node {node}, round {round_id}, {content(order)}: {why}")
                            if stop_at is not None and stop_at in why:
                                return plans, signed_by, decrypted, tried
    return plans, signed_by, decrypted, tried


def _search_two(
    scene: dict[str, Any], cls: type[ThresholdClient], signed_by: dict[frozenset, set[str]], candidates: list[tuple[Item, ...]]
) -> tuple[list[str], int, int]:
    """Search 2: every choice of one confirmed set per node; the sets the server gets partial
    decryptions of (from the holder and from the stand-in) must be equal or disjoint.

    ``candidates``: the round-2 sets the holder decrypts with every confirmation the server
    can get (search 1); with fewer confirmations no other set is decrypted. Returns the plans,
    the confirmation choices tried and the most sets any of them got decrypted.
    """
    fed = scene["fed"]
    decryptors = Oracle(fed, [HOLDER, STAND_IN], cls)

    def decrypted(chosen: tuple[Item, ...], sigs: dict[str, bytes]) -> bool:
        uploads = tuple(ConfirmedUpload(it.upload, sigs.get(it.upload.member, b"")) for it in chosen)
        return all(
            isinstance(_ask(decryptors, node, request), PartialDecryption) for node, request in _requests(scene, 2, uploads)
        )

    return search_overlaps(
        Oracle(fed, scene["nodes"], ThresholdClient), lambda node, entries: ConfirmRequest(2, node, entries),
        signed_by, candidates, decrypted, scene["old_set"],
    )


@pytest.fixture(scope="module")
def real_search(scene) -> tuple[list[str], dict[frozenset, set[str]], list[tuple[Item, ...]], int]:
    return _search_one(scene, ThresholdClient)


def test_search_one_finds_no_plan_against_a_real_holder_or_stand_in(scene, real_search) -> None:
    plans, _, decrypted, tried = real_search
    assert plans == []
    assert tried > 10000  # the search ran: every subset of 21 items, both orders, both rounds, holder and stand-in
    # only sets of genuine second-round uploads were decrypted (at least the honest one)
    assert {frozenset(content(c)) for c in decrypted} == {
        frozenset({(100, 2), (101, 2)}), frozenset({(100, 2), (102, 2)}), frozenset({(101, 2), (102, 2)}),
        frozenset({(100, 2), (101, 2), (102, 2)}),
    }


def test_search_one_breaks_a_holder_without_signature_checks(scene) -> None:
    plans, _, _, _ = _search_one(scene, NoSignatureChecks, stop_at="alone")
    # e.g. node 100's upload of this round plus its upload of the last one, relabelled as another node's
    assert plans and "the updates of 1 node(s) alone" in plans[-1], plans


def test_search_two_finds_no_plan_against_the_real_nodes(scene, real_search) -> None:
    _, signed_by, decrypted, _ = real_search
    assert sum(len(who) for who in signed_by.values()) >= 9  # each node would confirm several sets
    plans, tried, most = _search_two(scene, ThresholdClient, signed_by, decrypted)
    assert plans == []
    assert tried == 4**3  # each node: no confirmation, or one of the three sets with its upload
    assert most == 1  # some choices get a set decrypted, none gets two


def test_search_two_breaks_a_holder_that_checks_no_confirmation(scene, real_search) -> None:
    _, signed_by, decrypted, _ = real_search
    plans, _, _ = _search_two(scene, NoConfirmationCheck, signed_by, decrypted)
    assert plans and "overlap" in plans[0], plans
