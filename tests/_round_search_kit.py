"""What the malicious-server searches of the CKKS rounds share (tests/he/test_round_search.py,
tests/he_threshold/test_round_search.py): the uploads a server may present, real nodes asked
one question at a time, and the rule of what a released sum may contain.

A search counts a plan when a node answers a request whose sum reveals more than an allowed
sum (:func:`leak`); the nodes are asked through an :class:`Oracle` that rebuilds a node from
its saved state after every answer, so every question is asked of the same node.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable

from fedcrypt.errors import FedcryptError


@dataclass(frozen=True)
class Item:
    """An upload as the server may present it, and whose update it really carries."""

    upload: Any
    owner: int
    round: int

    @property
    def entry(self) -> tuple[str, int, bytes]:
        return (self.upload.member, self.upload.node, hashlib.sha256(self.upload.blob).digest())


class Oracle:
    """Real nodes (``cls`` rebuilt from ``fed.clients``' state bytes), asked one message at a
    time; a node that accepts is rebuilt from its saved state (a refusal changes nothing: the
    refusal tests check that)."""

    def __init__(self, fed: Any, nodes: list[int], cls: type) -> None:
        self.fed, self.cls = fed, cls
        self.saved = {n: fed.clients[n].to_state_bytes() for n in nodes}
        self.live = {n: self._fresh(n) for n in nodes}
        self.accepted = 0

    def _fresh(self, node: int) -> Any:
        return self.cls.from_state_bytes(self.saved[node], config=self.fed.config, identity=self.fed.identity(node))

    def ask(self, node: int, message: Any) -> Any:
        try:
            reply = self.live[node].handle(message)
        except FedcryptError:
            return None
        self.accepted += 1
        self.live[node] = self._fresh(node)
        return reply


def content(items: tuple[Item, ...]) -> list[tuple[int, int]]:
    """Whose update of which round each item carries."""
    return [(it.owner, it.round) for it in items]


def leak(items: tuple[Item, ...], old_set: frozenset, minimum: int) -> str | None:
    """Why decrypting the sum of these items reveals more than an allowed sum, or None:
    at least ``minimum`` genuine uploads of distinct nodes of one round, and in the first
    round only the set already released (``old_set``)."""
    found = content(items)
    owners = {owner for owner, _ in found}
    if len(set(found)) != len(found):
        return "one upload counted twice"
    if len(owners) < minimum:
        return f"the updates of {len(owners)} node(s) alone"
    if len({rnd for _, rnd in found}) != 1:
        return "uploads of two rounds mixed"
    if any(it.upload.node != it.owner for it in items):
        return "an upload under another node's name"
    if found[0][1] == 1 and set(found) != old_set:
        return "a first-round set that was never released"
    return None


def search_overlaps(
    confirmers: Oracle,
    confirm: Callable[[int, tuple], Any],
    signed_by: dict[frozenset, set[str]],
    candidates: list[tuple[Item, ...]],
    released_sum: Callable[[tuple[Item, ...], dict[str, bytes]], bool],
    old_set: frozenset,
) -> tuple[list[str], int, int]:
    """Every way for the server to spend the nodes' one confirmation per round: each member
    confirms one candidate set with its upload in it, or none. The sets whose sum the
    server gets (``released_sum(chosen, confirmations)``: the protocol's request(s) for that
    sum answered) must be equal or disjoint, the first round's ``old_set`` included.

    ``candidates``: the round-2 sets released with every confirmation the server can get
    (a confirmation of any other set lets nothing through: the same as none);
    ``confirm(node, entries)``: the protocol's confirm request; ``signed_by``: who confirms
    which entry set. Returns the plans, the choices tried and the most sets any choice got.
    """
    members = sorted({m for who in signed_by.values() for m in who})
    wanted = {frozenset(it.entry for it in chosen) for chosen in candidates}
    options = {m: [None] + [s for s, who in signed_by.items() if m in who and s in wanted] for m in members}
    signature: dict[tuple[frozenset, str], bytes] = {}
    cache: dict[tuple[int, frozenset], bool] = {}

    def confirmation(ordered: tuple, member: str) -> bytes:
        key = (frozenset(ordered), member)
        if key not in signature:
            node = next(n for m, n, _ in ordered if m == member)
            reply = confirmers.ask(node, confirm(node, ordered))
            signature[key] = getattr(reply, "signature", b"") if reply is not None else b""
        return signature[key]

    def accepted(index: int, chosen: tuple[Item, ...], holders: frozenset) -> bool:
        if (index, holders) not in cache:
            ordered = tuple(it.entry for it in chosen)
            cache[(index, holders)] = released_sum(chosen, {m: confirmation(ordered, m) for m in holders})
        return cache[(index, holders)]

    tried = most = 0
    for combo in itertools.product(*(options[m] for m in members)):
        tried += 1
        choice = dict(zip(members, combo))
        family = [old_set]
        for index, chosen in enumerate(candidates):
            entries = frozenset(it.entry for it in chosen)
            if not accepted(index, chosen, frozenset(m for m in members if choice[m] == entries)):
                continue
            released = frozenset(content(chosen))
            for other in family:
                if released != other and released & other:
                    return [f"confirmations {choice}: sums of {sorted(other)} and {sorted(released)} overlap"], tried, most
            family.append(released)
        most = max(most, len(family) - 1)
    return [], tried, most
