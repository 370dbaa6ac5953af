"""How a node with (or without) a roster takes part in a SecAgg round: the rule, sans-IO.

A transport hands each node the round's config and the roster names of its clients, in
client-id order (the *members*); :func:`round_keys` decides from the node's own roster and
identity whether and how it joins:

* a node **with** a roster joins only the malicious-server mode (``verify_survivors``): a
  server that offers it an honest-but-curious round is refused (a downgrade);
* its own position must name itself (the roster's key under that name is its identity's);
* every other client is checked against the roster: the members must be distinct roster
  members, so the server can neither invent a client nor swap a key;
* a node **without** a roster cannot check anyone's signature, so it refuses the
  malicious-server mode (it would only pretend) and joins honest-but-curious rounds;
* the server declares how many colluders the round withstands (``max_colluders``, which
  sets the threshold and the quorum); a node refuses a round that declares fewer than the
  node's own assumption (``required_colluders``), so the server cannot lower the bound
  the guarantee rests on;
* in SecAgg+ the neighbour graph's seed is :func:`graph_seed` of the roster digest, the
  round id and the members, which every node recomputes: a server-chosen seed is refused.
  The server keeps the freedom it has anyway (which round id, which members, in which
  order: it can grind these offline), and the guarantee does not rest on the graph: the
  Harary graphs of every seed are isomorphic, and the model checkers place the colluders
  worst-case on them (``fedcrypt.testing.modelcheck``, ``fedcrypt.testing.rulecheck``).
  What the derivation removes is a seed that differs from node to node, or that no node
  can check.

Members are public; a server that lies about them is caught by the signatures (each
advert, attestation and survivor-set signature is checked against the roster key of the
client id that sent it). Names travel as :func:`pack_members` bytes, bound into the round's
associated data.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Sequence

from fedcrypt.crypto import Ed25519KeyPair
from fedcrypt.errors import IdentityError, MalformedMessageError, ProtocolViolationError
from fedcrypt.identity import MAX_MEMBERS, NodeIdentity, Roster

from .config import SecAggConfig

__all__ = ["round_keys", "graph_seed", "pack_members", "unpack_members"]


def round_keys(
    config: SecAggConfig,
    client_id: int,
    members: Sequence[str],
    roster: Roster | None,
    identity: NodeIdentity | None,
    *,
    required_colluders: int = 0,
    round_id: int | None = None,
) -> tuple[Ed25519KeyPair | None, dict[int, bytes] | None]:
    """The ``(signing_key, verify_keys)`` a node gives its :class:`~fedcrypt.secagg.ClientProtocol`.

    Args:
        required_colluders: how many colluding clients this node assumes; a round that
            declares fewer (``config.max_colluders``) is refused.
        round_id: the round's id; needed with a roster in SecAgg+, whose graph seed must
            be :func:`graph_seed` ``(roster, round_id, members)``.

    Returns ``(None, None)`` for an honest-but-curious round of a node without a roster.

    Raises:
        ProtocolViolationError: a downgrade (a node with a roster offered a round without
            ``verify_survivors``), or a malicious-server round offered to a node without one.
        IdentityError: the members do not match the roster or this node's identity.
        ProtocolViolationError: also a SecAgg+ graph seed other than :func:`graph_seed`'s.
    """
    if (roster is None) != (identity is None):
        raise ValueError("a roster and a node identity go together: give both or neither")
    if isinstance(required_colluders, bool) or not isinstance(required_colluders, int) or required_colluders < 0:
        raise ValueError(f"required_colluders must be a non-negative integer, got {required_colluders!r}")
    if config.max_colluders < required_colluders:
        raise ProtocolViolationError(
            f"the round withstands {config.max_colluders} colluding clients; this node requires at least "
            f"{required_colluders} (a server may not lower the bound)"
        )
    if roster is None:
        if config.verify_survivors:
            raise ProtocolViolationError("the round runs the malicious-server mode, but this node has no roster to check signatures with")
        return None, None
    assert identity is not None  # given exactly with a roster (checked above)
    if not config.verify_survivors:
        raise ProtocolViolationError(
            "this node has a roster and joins only the malicious-server mode (verify_survivors): an honest-but-curious round is refused (a downgrade)"
        )
    if len(members) != config.num_clients or not 0 <= client_id < len(members):
        raise IdentityError(f"the round names {len(members)} members for {config.num_clients} clients")
    keys = roster.verify_keys(members)
    if not hmac.compare_digest(keys[client_id], identity.public_bytes):
        raise IdentityError(f"client {client_id} of the round is roster member {members[client_id]!r}, not this node")
    if not config.complete_graph:
        if round_id is None:
            raise ValueError("a SecAgg+ round with a roster needs round_id to check its graph seed")
        if not hmac.compare_digest(config.graph_seed, graph_seed(roster, round_id, members)):
            raise ProtocolViolationError(
                "the round's SecAgg+ graph seed is not the one derived from the roster, round id and members (a server-chosen graph is refused)"
            )
    return identity.signing_key, keys


def graph_seed(roster: Roster, round_id: int, members: Sequence[str]) -> bytes:
    """The SecAgg+ graph seed of a round with a roster: what every node can recompute.

    SHA-256 over a label, the roster digest, the round id and :func:`pack_members`
    (length-prefixed, so no two inputs share an encoding); 32 bytes.
    """
    if isinstance(round_id, bool) or not isinstance(round_id, int) or not 0 <= round_id < 1 << 64:
        raise ValueError(f"round_id must be an integer in [0, 2^64), got {round_id!r}")
    return hashlib.sha256(b"fedcrypt/secagg/graph-seed/v1" + roster.digest() + struct.pack(">Q", round_id) + pack_members(members)).digest()


def pack_members(members: Sequence[str]) -> bytes:
    """Canonical bytes of the round's member names (client-id order)."""
    encoded = [name.encode("ascii") for name in members]
    return struct.pack(">I", len(encoded)) + b"".join(struct.pack(">B", len(e)) + e for e in encoded)


def unpack_members(data: bytes) -> tuple[str, ...]:
    """Strict decoder of :func:`pack_members`.

    Raises:
        MalformedMessageError: truncated, oversized, trailing bytes or a non-ASCII name.
    """
    if len(data) < 4:
        raise MalformedMessageError("members: shorter than the count")
    (count,) = struct.unpack(">I", data[:4])
    if count > MAX_MEMBERS or count > len(data) - 4:
        raise MalformedMessageError(f"members: count {count} exceeds the cap or the data")
    names, position = [], 4
    for _ in range(count):
        if position >= len(data):
            raise MalformedMessageError("members: truncated")
        size = data[position]
        name = data[position + 1 : position + 1 + size]
        if size == 0 or len(name) != size:
            raise MalformedMessageError("members: truncated or empty name")
        try:
            names.append(name.decode("ascii"))
        except UnicodeDecodeError:
            raise MalformedMessageError("members: a name is not ASCII") from None
        position += 1 + size
    if position != len(data):
        raise MalformedMessageError(f"members: {len(data) - position} trailing bytes")
    return tuple(names)
