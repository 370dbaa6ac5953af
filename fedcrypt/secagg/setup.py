"""How a SecAgg round starts over a transport: its config, its associated data, the checks a
node applies before it joins, and the config's bytes in the setup message. Sans-IO.

A transport's server samples the round's nodes (transport ids, increasing; a node's client
id is its position), and sends every node the same setup: the config (:func:`dump_config`),
the node list, the round id, the largest FedAvg weight, any transport data the round binds
(distributed-DP settings, a model digest) and, with a roster, the members in client-id
order. Who decides what:

* the server derives the config from the number of nodes (:func:`config_for`): the Shamir
  threshold is the largest of the fraction asked for, a strict majority of the share
  holders plus the colluders, and ``c + 2``; with a roster ``verify_survivors`` is on and
  the SecAgg+ graph seed is :func:`~fedcrypt.secagg.membership.graph_seed`, which every
  node recomputes (:func:`~fedcrypt.secagg.membership.round_keys`);
* every party binds the round's associated data (:func:`round_binding`: run, round and the
  setup's bytes), so nodes shown different setups fail the round;
* a node joins (:func:`check_join`) only at its own position in the node list, for a round
  id above every round it joined before, a round of at least its own minimum of clients,
  and, if it asks for one, distributed DP of at least its own noise floor
  (:func:`dp_to_bytes` / :func:`dp_from_bytes`: the DP settings in the setup);
* a node tells the server which roster member it is by signing :func:`identify_bytes` over
  a fresh challenge of the server's (the server maps transport ids to members with it).

Config bytes (:func:`dump_config`): a small tagged format (no pickle); :func:`load_config`
is strict and runs the config's own checks again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from typing import Any, Sequence

from fedcrypt.errors import FedcryptError, MalformedMessageError, ProtocolViolationError, RoundAbortedError, UnexpectedMessageError
from fedcrypt.identity import Roster

from .config import SecAggConfig
from .membership import graph_seed
from .messages import Stage

__all__ = [
    "config_for",
    "round_binding",
    "weight_bytes",
    "check_join",
    "identify_bytes",
    "dp_to_bytes",
    "dp_from_bytes",
    "dump_config",
    "load_config",
]

_DP_FORMAT = struct.Struct(">ddBB32s")  # noise multiplier, clip, bits, mechanism, rotation seed


def config_for(
    num_clients: int,
    *,
    threshold: float = 0.67,
    neighbours: int | None = None,
    bits: int = 32,
    clip: float = 4.0,
    rounding: str = "stochastic",
    max_colluders: int = 0,
    roster: Roster | None = None,
    round_id: int | None = None,
    members: Sequence[str] = (),
) -> SecAggConfig:
    """The config of a round of ``num_clients`` clients (see the module docstring).

    Args:
        threshold: the Shamir threshold as a fraction of the share holders (rounded up).
        neighbours: the SecAgg+ degree; ``None`` or at least ``num_clients - 1``: the complete graph.
        max_colluders: ``c``; raises the threshold to ``max(floor((m + c)/2) + 1, c + 2)``.
        roster: turns on ``verify_survivors``; with ``round_id`` and ``members`` a SecAgg+
            round gets the graph seed every node derives.

    Raises:
        ValueError: no safe config exists (the message names the bound).
    """
    k = neighbours if neighbours is None or neighbours < num_clients - 1 else None
    holders = num_clients if k is None else k + 1
    c = max_colluders
    t = min(holders, max((holders + c) // 2 + 1, c + 2, math.ceil(threshold * holders)))
    config = SecAggConfig(
        num_clients=num_clients,
        threshold=t,
        neighbours=k,
        bits=bits,
        clip=clip,
        rounding=rounding,
        max_colluders=c,
        verify_survivors=roster is not None,
    )
    if roster is not None and round_id is not None and not config.complete_graph:
        config = dataclasses.replace(config, graph_seed=graph_seed(roster, round_id, members))
    return config


def round_binding(run_id: int, round_id: int, *setup: bytes) -> bytes:
    """The associated data every party binds into a round: run, round and the setup's fields.

    An adapter passes *every* setup field a server sends a node except its client id (the
    nodes, the DP settings, the model digest, the roster members, :func:`weight_bytes` of the
    max weight, ...), so a server that shows two nodes different setups gets two bindings and
    the round fails (attacker review 5: an unbound max weight let a server scale every input
    but one's to zero). Each field is length-prefixed: no two field lists share a binding.
    """
    digest = hashlib.sha256(b"fedcrypt/round-binding/v2" + struct.pack(">QQI", run_id & ((1 << 64) - 1), round_id, len(setup)))
    for field in setup:
        digest.update(struct.pack(">Q", len(field)))
        digest.update(field)
    return digest.digest()


def weight_bytes(max_weight: float) -> bytes:
    """A max weight as :func:`round_binding` binds it (big-endian IEEE 754 double)."""
    return struct.pack(">d", max_weight)


def check_join(
    config: SecAggConfig,
    *,
    nodes: Sequence[int] | Sequence[str],
    client_id: int,
    node: int | str,
    round_id: int,
    last_round: int | None,
    min_clients: int,
    dp: Any = None,
    min_noise_multiplier: float | None = None,
) -> None:
    """A node's checks before it joins a round (its own position, no replay, enough clients, its DP floor).

    Args:
        nodes: the round's transport ids in client-id order (Flower node ids, FLARE site names).
        node: this node's transport id.
        last_round: the last round id this node joined (``None``: none).
        dp: the round's :class:`~fedcrypt.dp.distributed.DistributedDp` (:func:`dp_from_bytes`), or None.
        min_noise_multiplier: the node's floor (None: no DP required).

    Raises:
        UnexpectedMessageError: the node is not client ``client_id``, or already joined a
            round with this id or a later one (a replay).
        RoundAbortedError: fewer clients than ``min_clients``.
        MalformedMessageError: distributed DP outside the 32-bit ring.
        ProtocolViolationError: no DP, or less noise than ``min_noise_multiplier``.
    """
    if len(nodes) != config.num_clients or not 0 <= client_id < len(nodes) or nodes[client_id] != node:
        raise UnexpectedMessageError(
            f"this node is not client {client_id} of the round's {len(nodes)} nodes",
            party=node,
            round=round_id,
            stage=Stage.ADVERTISE_KEYS,
        )
    if last_round is not None and round_id <= last_round:
        raise UnexpectedMessageError(
            f"a setup for round {round_id}, but this node already joined round {last_round} (replay)",
            party=node,
            round=round_id,
            stage=Stage.ADVERTISE_KEYS,
        )
    if config.num_clients < min_clients:
        raise RoundAbortedError(
            f"{config.num_clients} clients is fewer than this client's minimum {min_clients}",
            party=client_id,
            round=round_id,
            stage=Stage.ADVERTISE_KEYS,
        )
    if dp is not None and config.bits != 32:
        raise MalformedMessageError("distributed DP needs the 32-bit ring")
    if min_noise_multiplier is not None and (dp is None or dp.config.noise_multiplier < min_noise_multiplier):
        offered = "no distributed DP" if dp is None else f"noise multiplier {dp.config.noise_multiplier}"
        raise ProtocolViolationError(
            f"the round offers {offered}; this client requires at least {min_noise_multiplier}",
            party=client_id,
            round=round_id,
            stage=Stage.ADVERTISE_KEYS,
        )


def dp_to_bytes(noise_multiplier: float, clip: float, bits: int, mechanism: str, rotation_seed: bytes) -> bytes:
    """A round's distributed-DP settings as setup bytes (``b""`` in the setup: no DP)."""
    from fedcrypt.dp.distributed import MECHANISMS

    return _DP_FORMAT.pack(noise_multiplier, clip, bits, MECHANISMS.index(mechanism), rotation_seed)


def dp_from_bytes(data: bytes, num_clients: int, dim: int | None = None) -> Any:
    """The round's :class:`~fedcrypt.dp.distributed.DistributedDp` from :func:`dp_to_bytes` (``b""``: None).

    Raises:
        MalformedMessageError: bytes of another length, or settings the mechanism refuses.
    """
    from fedcrypt.dp.distributed import MECHANISMS, DistributedDp, DistributedDpConfig

    if data == b"":
        return None
    if len(data) != _DP_FORMAT.size:
        raise MalformedMessageError(f"dp settings must be {_DP_FORMAT.size} bytes, got {len(data)}")
    noise_multiplier, clip, bits, mechanism, seed = _DP_FORMAT.unpack(data)
    try:
        config = DistributedDpConfig(noise_multiplier, clip, num_clients, bits=bits, mechanism=MECHANISMS[mechanism])
        return DistributedDp(config, dim=dim, rotation_seed=seed)
    except (IndexError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"invalid dp settings: {exc}") from None


def identify_bytes(run_id: int, node_id: int, challenge: bytes, name: str) -> bytes:
    """What a node signs to tell the server which roster member it is (fresh per challenge)."""
    return b"fedcrypt/flower/identify/v1" + struct.pack(">QQ", run_id, node_id) + challenge + name.encode("ascii")


# ============================================================================ config bytes
_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR = range(6)
_TUPLE, _FLOAT = 10, 16
_CONFIG_FIELDS = 10


def dump_config(config: SecAggConfig) -> bytes:
    """The parameters of a SecAggConfig as canonical bytes (what a node rebuilds it from)."""
    return _encode(
        (
            config.num_clients,
            config.threshold,
            config.neighbours,
            config.bits,
            float(config.clip),
            None if config.scale is None else float(config.scale),
            config.verify_survivors,
            config.rounding,
            config.graph_seed,
            config.max_colluders,
        ),
        0,
    )


def load_config(data: bytes) -> SecAggConfig:
    """Rebuild a SecAggConfig from :func:`dump_config` bytes (its own checks run again).

    Raises:
        MalformedMessageError: the bytes do not decode or describe an invalid config.
    """
    value = _decode_all(data, "SecAggConfig")
    if not isinstance(value, tuple) or len(value) != _CONFIG_FIELDS:
        raise MalformedMessageError(f"SecAggConfig bytes do not hold the {_CONFIG_FIELDS} parameters")
    n, t, k, bits, clip, scale, verify, rounding, seed, colluders = value
    try:
        return SecAggConfig(
            num_clients=n,
            threshold=t,
            neighbours=k,
            bits=bits,
            clip=clip,
            scale=scale,
            verify_survivors=verify,
            rounding=rounding,
            graph_seed=seed,
            max_colluders=colluders,
        )
    except (TypeError, ValueError, FedcryptError) as exc:
        raise MalformedMessageError(f"invalid SecAggConfig: {exc}") from None


def _blob(tag: int, payload: bytes) -> bytes:
    return struct.pack(">BI", tag, len(payload)) + payload


def _encode(value: Any, depth: int) -> bytes:
    if depth > 1:
        raise TypeError("config bytes nest one tuple only")
    if value is None:
        return _blob(_NONE, b"")
    if value is True or value is False:
        return _blob(_TRUE if value else _FALSE, b"")
    if isinstance(value, int):
        if not -(1 << 127) <= value < 1 << 127:
            raise TypeError("integer out of the 128-bit range of the config encoding")
        return _blob(_INT, value.to_bytes(16, "big", signed=True))
    if isinstance(value, float):
        return _blob(_FLOAT, struct.pack(">d", value))
    if isinstance(value, bytes):
        return _blob(_BYTES, value)
    if isinstance(value, str):
        return _blob(_STR, value.encode("utf-8"))
    if isinstance(value, tuple):
        return _blob(_TUPLE, b"".join(_encode(item, depth + 1) for item in value))
    raise TypeError(f"cannot encode a {type(value).__name__} in config bytes")


def _decode_all(data: bytes, what: str) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedMessageError(f"{what} is a {type(data).__name__}, not bytes")
    try:
        value, end = _decode(bytes(data), 0, 0)
    except (struct.error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise MalformedMessageError(f"{what} does not decode: {type(exc).__name__}") from None
    if end != len(data):
        raise MalformedMessageError(f"{what} has {len(data) - end} trailing bytes")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > 1:
        raise MalformedMessageError("config bytes nested too deeply")
    if pos + 5 > len(data):
        raise MalformedMessageError("config bytes truncated")
    tag, length = struct.unpack_from(">BI", data, pos)
    start, end = pos + 5, pos + 5 + length
    if end > len(data):
        raise MalformedMessageError("config bytes truncated")
    payload = data[start:end]
    if tag in (_NONE, _TRUE, _FALSE) and length:
        raise MalformedMessageError("config bytes: a constant with a payload")
    if tag == _NONE:
        return None, end
    if tag in (_TRUE, _FALSE):
        return tag == _TRUE, end
    if tag == _INT:
        if length != 16:
            raise MalformedMessageError("config bytes: bad integer length")
        return int.from_bytes(payload, "big", signed=True), end
    if tag == _FLOAT:
        return struct.unpack(">d", payload)[0], end
    if tag == _BYTES:
        return bytes(payload), end
    if tag == _STR:
        return payload.decode("utf-8"), end
    if tag == _TUPLE:
        items = []
        inner = start
        while inner < end:
            item, inner = _decode(data[:end], inner, depth + 1)
            items.append(item)
        return tuple(items), end
    raise MalformedMessageError(f"config bytes: unknown tag {tag}")
