"""What the malicious-server searches of the CKKS rounds share (tests/he/test_round_search.py,
tests/he_threshold/test_round_search.py): the uploads a server may present, real nodes asked
one question at a time, and the rule of what a released sum may contain.

A search counts a plan when a node answers a request whose sum reveals more than an allowed
sum (:func:`leak`); the nodes are asked through an :class:`Oracle` that rebuilds a node from
its saved state after every answer, so every question is asked of the same node.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

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
