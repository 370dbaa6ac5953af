"""Persist a :class:`~fedcrypt.secagg.ClientProtocol` between Flower messages.

In a Flower deployment every message to a SuperNode runs in a fresh ``flwr-clientapp``
process; only ``Context.state`` (a RecordDict kept by the SuperNode) survives from one
protocol stage to the next. This module turns a client protocol object into bytes and
back so the ClientApp mod can keep it there.

The encoding is a small tagged format over the object's ``__slots__`` (no pickle: nothing
here can execute code while decoding). Every value type the client uses has a tag; a slot
holding any other type raises ``TypeError`` at dump time, so a change in the protocol's
internals fails loudly in the round-trip test instead of silently losing state.

Invariants:

* ``load_client(dump_client(c))`` answers every later server message exactly as ``c`` would;
* the bytes hold the client's private keys and seeds: they stay on the client (the
  SuperNode's own state, like Flower's own SecAgg+ mod keeps its keys) and never print;
  the node's long-term identity key is not among them (only its public half: the mod
  reloads the key from its file);
* decoding validates every length and tag and raises
  :class:`~fedcrypt.errors.MalformedMessageError` on anything else.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from fedcrypt.crypto import Ed25519KeyPair, Secret, Share, X25519KeyPair
from fedcrypt.errors import FedcryptError, IdentityError, MalformedMessageError
from fedcrypt.secagg import AdvertiseKeys, ClientProtocol, SecAggConfig, Stage

__all__ = ["dump_client", "load_client", "dump_config", "load_config"]

_MAGIC = b"FCFS\x01"
_MAX_DEPTH = 8

# tags
_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR, _SECRET, _X25519, _SHARE, _ADVERT = range(10)
_TUPLE, _FROZENSET, _DICT, _NDARRAY, _STAGE, _CONFIG, _FLOAT, _IDENTITY = range(10, 18)


class _IdentityPlaceholder:
    """Where a client's Ed25519 identity key was: only its public half is kept in the state."""

    __slots__ = ("public_bytes",)

    def __init__(self, public_bytes: bytes) -> None:
        self.public_bytes = public_bytes


def dump_config(config: SecAggConfig) -> bytes:
    """The parameters of a SecAggConfig as canonical bytes (what a client rebuilds it from)."""
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
    if not isinstance(value, tuple) or len(value) != 10:
        raise MalformedMessageError("SecAggConfig bytes do not hold the 10 parameters")
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


def dump_client(client: ClientProtocol) -> bytes:
    """Every slot of a client protocol object, as bytes (they include its secrets)."""
    if not isinstance(client, ClientProtocol):
        raise TypeError(f"expected a ClientProtocol, got {type(client).__name__}")
    slots = {name: getattr(client, name) for name in ClientProtocol.__slots__}
    return _MAGIC + _encode(slots, 0)


def load_client(data: bytes, *, signing_key: Ed25519KeyPair | None = None) -> ClientProtocol:
    """Rebuild the client protocol object of :func:`dump_client`.

    Args:
        data: the dump.
        signing_key: the node's identity key, when the client signs (the dump holds only
            its public half); it must be the key the client was built with.

    Raises:
        MalformedMessageError: the bytes are not a dump of this ClientProtocol version.
        IdentityError: the dump needs the identity key and another (or none) was given.
    """
    if not isinstance(data, (bytes, bytearray)) or not bytes(data[: len(_MAGIC)]) == _MAGIC:
        raise MalformedMessageError("not a fedcrypt client-state dump (bad magic)")
    slots = _decode_all(bytes(data[len(_MAGIC) :]), "client state")
    if not isinstance(slots, dict) or set(slots) != set(ClientProtocol.__slots__):
        raise MalformedMessageError("client state does not match this ClientProtocol's slots")
    client = object.__new__(ClientProtocol)
    for name, value in slots.items():
        if isinstance(value, _IdentityPlaceholder):
            if signing_key is None or signing_key.public_bytes != value.public_bytes:
                raise IdentityError("the client state was signed with another identity key than this node's")
            value = signing_key
        object.__setattr__(client, name, value)
    return client


# ---------------------------------------------------------------------------- encoder
def _blob(tag: int, payload: bytes) -> bytes:
    return struct.pack(">BI", tag, len(payload)) + payload


def _encode(value: Any, depth: int) -> bytes:
    if depth > _MAX_DEPTH:
        raise TypeError("client state nested too deeply")
    if value is None:
        return _blob(_NONE, b"")
    if value is True or value is False:
        return _blob(_TRUE if value else _FALSE, b"")
    if isinstance(value, Stage):
        return _blob(_STAGE, struct.pack(">B", int(value)))
    if isinstance(value, int):
        if not -(1 << 127) <= value < 1 << 127:
            raise TypeError("integer out of the 128-bit range of the state encoding")
        return _blob(_INT, value.to_bytes(16, "big", signed=True))
    if isinstance(value, float):
        return _blob(_FLOAT, struct.pack(">d", value))
    if isinstance(value, bytes):
        return _blob(_BYTES, value)
    if isinstance(value, str):
        return _blob(_STR, value.encode("utf-8"))
    if isinstance(value, Secret):
        return _blob(_SECRET, value.reveal())
    if isinstance(value, X25519KeyPair):
        return _blob(_X25519, value.private_bytes().reveal())
    if isinstance(value, Ed25519KeyPair):
        # the node's identity key stays in its key file: only the public half is kept here
        return _blob(_IDENTITY, value.public_bytes)
    if isinstance(value, Share):
        return _blob(_SHARE, value.to_bytes())
    if isinstance(value, AdvertiseKeys):
        return _blob(_ADVERT, value.to_bytes())
    if isinstance(value, SecAggConfig):
        return _blob(_CONFIG, dump_config(value))
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "uif":
            raise TypeError("only 1-D numeric arrays can be kept in the client state")
        dtype = value.dtype.newbyteorder("<").str.encode("ascii")
        return _blob(_NDARRAY, struct.pack(">B", len(dtype)) + dtype + value.astype(value.dtype.newbyteorder("<")).tobytes())
    if isinstance(value, tuple):
        return _blob(_TUPLE, b"".join(_encode(item, depth + 1) for item in value))
    if isinstance(value, frozenset):
        return _blob(_FROZENSET, b"".join(_encode(item, depth + 1) for item in sorted(value)))
    if isinstance(value, dict):
        return _blob(
            _DICT, b"".join(_encode(k, depth + 1) + _encode(v, depth + 1) for k, v in value.items())
        )
    raise TypeError(f"cannot keep a {type(value).__name__} in the client state")


# ---------------------------------------------------------------------------- decoder
def _decode_all(data: bytes, what: str) -> Any:
    try:
        value, end = _decode(data, 0, 0)
    except (struct.error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise MalformedMessageError(f"{what} does not decode: {type(exc).__name__}") from None
    if end != len(data):
        raise MalformedMessageError(f"{what} has {len(data) - end} trailing bytes")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > _MAX_DEPTH:
        raise MalformedMessageError("state nested too deeply")
    if pos + 5 > len(data):
        raise MalformedMessageError("state truncated")
    tag, length = struct.unpack_from(">BI", data, pos)
    start, end = pos + 5, pos + 5 + length
    if end > len(data):
        raise MalformedMessageError("state truncated")
    payload = data[start:end]
    if tag == _NONE:
        return None, end
    if tag in (_TRUE, _FALSE):
        return tag == _TRUE, end
    if tag == _STAGE:
        return Stage(struct.unpack(">B", payload)[0]), end
    if tag == _INT:
        if length != 16:
            raise MalformedMessageError("bad integer length")
        return int.from_bytes(payload, "big", signed=True), end
    if tag == _FLOAT:
        return struct.unpack(">d", payload)[0], end
    if tag == _BYTES:
        return bytes(payload), end
    if tag == _STR:
        return payload.decode("utf-8"), end
    if tag == _SECRET:
        return Secret(payload), end
    if tag == _X25519:
        return X25519KeyPair.from_private_bytes(bytes(payload)), end
    if tag == _IDENTITY:
        if length != 32:
            raise MalformedMessageError("bad identity public key length")
        return _IdentityPlaceholder(bytes(payload)), end
    if tag == _SHARE:
        return Share.from_bytes(bytes(payload)), end
    if tag == _ADVERT:
        return AdvertiseKeys.from_bytes(bytes(payload)), end
    if tag == _CONFIG:
        return load_config(bytes(payload)), end
    if tag == _NDARRAY:
        size = payload[0]
        dtype = np.dtype(payload[1 : 1 + size].decode("ascii"))
        return np.frombuffer(payload[1 + size :], dtype=dtype).astype(dtype.newbyteorder("=")), end
    if tag in (_TUPLE, _FROZENSET, _DICT):
        items = []
        inner = start
        while inner < end:
            item, inner = _decode(data[:end], inner, depth + 1)
            items.append(item)
        if tag == _TUPLE:
            return tuple(items), end
        if tag == _FROZENSET:
            return frozenset(items), end
        if len(items) % 2:
            raise MalformedMessageError("dict state with an odd number of items")
        return dict(zip(items[0::2], items[1::2])), end
    raise MalformedMessageError(f"unknown state tag {tag}")
