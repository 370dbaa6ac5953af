"""The state encoding of :class:`~fedcrypt.secagg.ClientProtocol` (its ``to_state_bytes`` / ``from_state_bytes``).

A transport that handles every message in a fresh process (a Flower SuperNode runs each
message in its own ClientApp process) keeps the client between messages as these bytes.
They hold the client's private keys, self-mask seed, share keys and the shares it holds:
they belong in the node's private storage only, sealed if that storage is shared (the
Flower adapter seals them with AES-GCM under a node-local key).

Layout, version 1 (big-endian; ``?x`` is a presence byte 0/1 followed by ``x`` if 1)::

    "FCCS" | version (1)
    config      num_clients u32 | threshold u32 | ?neighbours u32 | bits u8 | clip f64 | ?scale f64
                | verify_survivors u8 | rounding (u8 length, ASCII) | graph_seed (u8 length, bytes)
                | max_colluders u32
    round       client_id u32 | round_id u64 | context (32) | stage u8
    identity    ?signing key's public half (32)    (never the private key)
                | ?verify keys (num_clients x 32, by client id)
    secrets     ?cipher private key (32) | ?mask private key (32) | ?self-mask seed (32)
    keys        ?own advert (u32 length, AdvertiseKeys bytes)
                | directory: u32 count, (u32 length, AdvertiseKeys bytes) by increasing sender
                | directory digest (u8 length 0 or 32)
                | share keys: u32 count, (u32 id, 32 bytes) by increasing id
                | shares held: u32 count, (u32 owner, self-mask-seed share, mask-key share) by increasing owner
    survivors   u2: u32 count, ids increasing | ?u3: u32 count, ids increasing
    input       ?(u64 count, count little-endian ring elements of the config's width)

Invariants:

* canonical: a client's state has one encoding (maps by increasing id, the config by its
  fields), and :func:`decode` refuses bytes that do not re-encode to themselves;
* strict (read through :class:`fedcrypt._wire.Reader`): truncated, extended or garbled bytes raise
  :class:`~fedcrypt.errors.MalformedMessageError` (a share out of range keeps its
  :class:`~fedcrypt.errors.InvalidShare`); counts are checked against the config and the
  remaining bytes before anything is allocated; fields must match the stage (keys and seed
  from the key advert until the unmask answer, none after it);
* the node's identity key is never in the bytes, only its public half: decoding needs the
  same key again and raises :class:`~fedcrypt.errors.IdentityError` otherwise.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.crypto import SEED_BYTES, SHARE_BYTES, Ed25519KeyPair, Secret, Share, X25519KeyPair, constant_time_equal
from fedcrypt.errors import FedcryptError, IdentityError, MalformedMessageError

from .config import SecAggConfig
from .messages import AdvertiseKeys, Stage

if TYPE_CHECKING:  # pragma: no cover
    from .client import ClientProtocol

__all__ = ["MAGIC", "VERSION", "FIELDS", "encode", "decode"]

MAGIC = b"FCCS"
VERSION = 1
_KEY = 32
#: The ClientProtocol attributes this encoding carries (a test checks it against ``__slots__``).
FIELDS = frozenset(
    {
        "config",
        "client_id",
        "round_id",
        "_context",
        "_stage",
        "_signing_key",
        "_verify_keys",
        "_cipher_keys",
        "_mask_keys",
        "_self_mask_seed",
        "_advert",
        "_directory",
        "_directory_digest",
        "_share_keys",
        "_shares",
        "_u2",
        "_u3",
        "_input",
    }
)
#: stages a stored client can be in (a client never enters ABORTED: it raises and is discarded);
#: the stage byte is the Stage value
_STORED_STAGES = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK, Stage.DONE)
_KEYED_STAGES = frozenset({Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK})
_MAX_ADVERT = 4 + 1 + 1 + 8 + 4 + 2 * _KEY + 32 + 1 + 64  # the AdvertiseKeys header and body, signed


# ---------------------------------------------------------------------------- encoder
def _optional(value: bytes | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + value


def _sized(blob: bytes) -> bytes:
    return struct.pack(">I", len(blob)) + blob


def _ids(ids: Any) -> bytes:
    ordered = sorted(ids)
    return struct.pack(f">I{len(ordered)}I", len(ordered), *ordered)


def _config_bytes(config: SecAggConfig) -> bytes:
    rounding, seed = config.rounding.encode("ascii"), config.graph_seed
    return b"".join(
        [
            struct.pack(">II", config.num_clients, config.threshold),
            _optional(None if config.neighbours is None else struct.pack(">I", config.neighbours)),
            struct.pack(">Bd", config.bits, float(config.clip)),
            _optional(None if config.scale is None else struct.pack(">d", float(config.scale))),
            struct.pack(">?B", config.verify_survivors, len(rounding)),
            rounding,
            struct.pack(">B", len(seed)),
            seed,
            struct.pack(">I", config.max_colluders),
        ]
    )


def encode(client: "ClientProtocol") -> bytes:
    """The canonical state bytes of ``client`` (SECRETS INCLUDED; the identity key excluded)."""
    config = client.config
    ring = config.codec.ring_dtype.newbyteorder("<")
    signing_key: Ed25519KeyPair | None = client._signing_key
    verify_keys: dict[int, bytes] | None = client._verify_keys
    cipher, mask, seed = client._cipher_keys, client._mask_keys, client._self_mask_seed
    advert: AdvertiseKeys | None = client._advert
    vector = client._input
    parts = [
        MAGIC,
        struct.pack(">B", VERSION),
        _config_bytes(config),
        struct.pack(">IQ", client.client_id, client.round_id),
        client._context,
        struct.pack(">B", int(client._stage)),
        _optional(None if signing_key is None else signing_key.public_bytes),
        _optional(None if verify_keys is None else b"".join(verify_keys[i] for i in range(config.num_clients))),
        _optional(None if cipher is None else cipher.private_bytes().reveal()),
        _optional(None if mask is None else mask.private_bytes().reveal()),
        _optional(None if seed is None else seed.reveal()),
        _optional(None if advert is None else _sized(advert.to_bytes())),
        struct.pack(">I", len(client._directory)),
        *(_sized(client._directory[v].to_bytes()) for v in sorted(client._directory)),
        struct.pack(">B", len(client._directory_digest)),
        client._directory_digest,
        struct.pack(">I", len(client._share_keys)),
        *(struct.pack(">I", v) + client._share_keys[v].reveal() for v in sorted(client._share_keys)),
        struct.pack(">I", len(client._shares)),
        *(struct.pack(">I", v) + client._shares[v][0].to_bytes() + client._shares[v][1].to_bytes() for v in sorted(client._shares)),
        _ids(client._u2),
        _optional(None if client._u3 is None else _ids(client._u3)),
        _optional(None if vector is None else struct.pack(">Q", vector.shape[0]) + np.ascontiguousarray(vector, dtype=ring).tobytes()),
    ]
    return b"".join(parts)


# ---------------------------------------------------------------------------- decoder
def _flag(reader: Reader) -> bool:
    value = reader.u8()
    if value > 1:
        raise reader.error(f"presence byte {value}")
    return bool(value)


def _read_ids(reader: Reader, n: int, label: str) -> tuple[int, ...]:
    count = reader.count(4, n, label)
    values = reader.unpack(f">{count}I")
    if any(not a < b for a, b in zip(values, values[1:])) or (values and values[-1] >= n):
        raise reader.error(f"{label} ids must be strictly increasing and below {n}")
    return values


def _read_config(reader: Reader) -> SecAggConfig:
    n, t = reader.unpack(">II")
    neighbours = reader.u32() if _flag(reader) else None
    bits, clip = reader.unpack(">Bd")
    scale = reader.unpack(">d")[0] if _flag(reader) else None
    verify = reader.u8()
    rounding = reader.sized(16, "rounding", width=1)
    seed = reader.sized(64, "graph seed", width=1, allow_empty=True)
    colluders = reader.u32()
    if verify > 1 or not math.isfinite(clip) or (scale is not None and not math.isfinite(scale)):
        raise MalformedMessageError("client state: invalid config fields")
    try:
        return SecAggConfig(
            num_clients=n,
            threshold=t,
            neighbours=neighbours,
            bits=bits,
            clip=clip,
            scale=scale,
            verify_survivors=bool(verify),
            rounding=rounding.decode("ascii"),
            graph_seed=seed,
            max_colluders=colluders,
        )
    except (TypeError, ValueError, ArithmeticError, FedcryptError) as exc:
        raise MalformedMessageError(f"client state: invalid config ({type(exc).__name__})") from None


def _advert(reader: Reader) -> AdvertiseKeys:
    blob = reader.sized(_MAX_ADVERT, "key advert")
    try:
        return AdvertiseKeys.from_bytes(blob)  # MalformedMessageError on bad bytes
    except (ValueError, TypeError) as exc:
        raise MalformedMessageError(f"client state: invalid key advert ({type(exc).__name__})") from None


def decode(cls: type["ClientProtocol"], data: bytes, signing_key: Ed25519KeyPair | None) -> "ClientProtocol":
    """Rebuild a client from :func:`encode` bytes (see the module docstring for the checks)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    if signing_key is not None and not isinstance(signing_key, Ed25519KeyPair):
        raise TypeError(f"signing_key must be an Ed25519KeyPair or None, got {type(signing_key).__name__}")
    raw = bytes(data)
    reader = Reader(raw, "client state")
    if reader.take(4) != MAGIC:
        raise reader.error("bad magic (not a SecAgg client state)")
    version = reader.u8()
    if version != VERSION:
        raise reader.error(f"unsupported version {version} (this fedcrypt reads {VERSION})")
    config = _read_config(reader)
    n = config.num_clients
    client_id, round_id = reader.unpack(">IQ")
    context = reader.take(32)
    stage_code = reader.u8()
    if client_id >= n or stage_code >= len(_STORED_STAGES):
        raise reader.error("client id or stage out of range")
    stage = _STORED_STAGES[stage_code]
    identity = reader.take(_KEY) if _flag(reader) else None
    verify_raw = reader.take(_KEY * n) if _flag(reader) else None
    verify_keys = None if verify_raw is None else {i: verify_raw[_KEY * i : _KEY * (i + 1)] for i in range(n)}
    cipher = X25519KeyPair.from_private_bytes(reader.take(_KEY)) if _flag(reader) else None
    mask = X25519KeyPair.from_private_bytes(reader.take(_KEY)) if _flag(reader) else None
    seed = Secret(reader.take(SEED_BYTES)) if _flag(reader) else None
    advert = _advert(reader) if _flag(reader) else None
    directory: dict[int, AdvertiseKeys] = {}
    for _ in range(reader.count(4, n, "directory")):
        entry = _advert(reader)
        if directory and entry.sender <= max(directory):
            raise reader.error("directory senders must be strictly increasing")
        directory[entry.sender] = entry
    digest = reader.sized(32, "directory digest", width=1, allow_empty=True)
    if len(digest) not in (0, 32):
        raise reader.error(f"a directory digest of {len(digest)} bytes")
    share_keys: dict[int, Secret] = {}
    for _ in range(reader.count(4 + _KEY, n, "share keys")):
        peer = reader.u32()
        if peer >= n or (share_keys and peer <= max(share_keys)):
            raise reader.error("share-key ids must be strictly increasing client ids")
        share_keys[peer] = Secret(reader.take(_KEY))
    shares: dict[int, tuple[Share, Share]] = {}
    for _ in range(reader.count(4 + 2 * SHARE_BYTES, n, "shares")):
        owner = reader.u32()
        if owner >= n or (shares and owner <= max(shares)):
            raise reader.error("share owners must be strictly increasing client ids")
        shares[owner] = (Share.from_bytes(reader.take(SHARE_BYTES)), Share.from_bytes(reader.take(SHARE_BYTES)))
    u2 = frozenset(_read_ids(reader, n, "u2"))
    u3 = _read_ids(reader, n, "u3") if _flag(reader) else None
    vector = None
    if _flag(reader):
        length = reader.u64()
        ring = config.codec.ring_dtype.newbyteorder("<")
        if length > reader.remaining // ring.itemsize:
            raise reader.error("the input is longer than the data")
        vector = np.frombuffer(reader.take(length * ring.itemsize), dtype=ring).copy()
    reader.expect_end()
    _check_consistent(config, client_id, round_id, context, stage, identity, verify_keys, (cipher, mask, seed), advert)
    if stage is Stage.DONE and (shares or share_keys):
        raise MalformedMessageError("client state: shares kept after the unmask answer")
    if identity is not None:
        if signing_key is None or not constant_time_equal(signing_key.public_bytes, identity):
            raise IdentityError("the client state belongs to another identity key than the one given (or none was given)")
    client = object.__new__(cls)
    values = {
        "config": config,
        "client_id": client_id,
        "round_id": round_id,
        "_context": context,
        "_stage": stage,
        "_signing_key": signing_key if identity is not None else None,
        "_verify_keys": verify_keys,
        "_cipher_keys": cipher,
        "_mask_keys": mask,
        "_self_mask_seed": seed,
        "_advert": advert,
        "_directory": directory,
        "_directory_digest": digest,
        "_share_keys": share_keys,
        "_shares": shares,
        "_u2": u2,
        "_u3": u3,
        "_input": vector,
    }
    for name, value in values.items():
        object.__setattr__(client, name, value)
    if encode(client) != raw:
        raise MalformedMessageError("client state: not in canonical form")
    return client


def _check_consistent(
    config: SecAggConfig,
    client_id: int,
    round_id: int,
    context: bytes,
    stage: Stage,
    identity: bytes | None,
    verify_keys: dict[int, bytes] | None,
    secrets: tuple[X25519KeyPair | None, X25519KeyPair | None, Secret | None],
    advert: AdvertiseKeys | None,
) -> None:
    """Fields that must agree with each other and with the stage (raises MalformedMessageError)."""
    verify = config.verify_survivors
    if (identity is not None) != verify or (verify_keys is not None) != verify:
        raise MalformedMessageError("client state: identity keys present without verify_survivors, or absent with it")
    if verify_keys is not None and identity is not None and not constant_time_equal(verify_keys[client_id], identity):
        raise MalformedMessageError("client state: the client's verify key is not its identity's public half")
    cipher, mask, _ = secrets
    if any((item is not None) != (stage in _KEYED_STAGES) for item in secrets):
        raise MalformedMessageError(f"client state: keys and seed do not match stage {stage.name}")
    if (advert is None) != (stage is Stage.ADVERTISE_KEYS):
        raise MalformedMessageError(f"client state: the own advert does not match stage {stage.name}")
    if advert is not None:
        if (
            advert.sender != client_id
            or advert.round_id != round_id
            or advert.context != context
            or bool(advert.signature) != verify
            or (cipher is not None and advert.cipher_public_key != cipher.public_bytes)
            or (mask is not None and advert.mask_public_key != mask.public_bytes)
        ):
            raise MalformedMessageError("client state: the advert is not this client's own keys")
