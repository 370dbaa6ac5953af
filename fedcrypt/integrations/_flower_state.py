"""What fedcrypt's Flower mods keep in ``Context.state``: sealed records under a node-local key.

In a Flower deployment every message to a SuperNode runs in a fresh ClientApp process;
only ``Context.state`` (a RecordDict the SuperNode keeps and hands to each process)
survives from one protocol stage to the next. What a mod keeps there holds secrets: the
SecAgg client's keys, seed and shares, the CKKS secret key, a threshold key share. Each
mod therefore keeps one record ``{"sealed": bytes}`` whose bytes are AES-256-GCM under a
:class:`StateKey` that never enters the Context:

1. the key file named by node config ``fedcrypt-state-key`` (or the mod's
   ``state_key_path``): 32 random bytes, created (owner-only) if the file does not exist;
2. else one derived with HKDF-SHA256 from the node's identity key (node config
   ``fedcrypt-identity``, or the mod's ``identity_path``);
3. else the default key file ``$FLWR_HOME/fedcrypt/state.key`` (``~/.flwr`` without
   ``FLWR_HOME``), created on first use: every ClientApp process of this machine and user
   shares it, so a node's state survives its processes and a SuperNode restart.

A record that is tampered with, sealed under another key, or moved to another run, node
or record (the associated data binds all three) raises
:class:`~fedcrypt.errors.DecryptionError` before the mod does anything: the node refuses
the message and releases nothing.

Sealed record, version 1::

    "FCSL" | version (1) | key id (8) | nonce (12) | AES-256-GCM ciphertext | tag (16)
    associated data: "fedcrypt/flower/sealed-state/v1" | record name (u8 length, ASCII)
                     | run id u64 | node id u64 | "FCSL" | version | key id

The key id (HKDF of the key material, public) tells "sealed under another key" apart from
"tampered" in the error message.

What this defends: a reader of ``Context.state`` (the SuperNode's memory and anything it
persists or logs, the link to the ClientApp process, Flower's simulation runtime, a
``repr(context)`` in a log) who cannot read the node's key file or identity key learns no
secret, and cannot swap or alter a record unnoticed. What it does not: rolling a record
back to an earlier sealed copy of the same record (that needs node-local monotonic
storage), or an attacker who can read the key file (for example a process running as the
same user as the ClientApp).

Also here: the SecAgg config's bytes in the setup message (:func:`dump_config`,
:func:`load_config`), a small tagged format (no pickle).
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Any

from fedcrypt.crypto import AEAD_OVERHEAD, Secret, aead_decrypt, aead_encrypt, constant_time_equal, hkdf_sha256, random_seed
from fedcrypt.errors import DecryptionError, FedcryptError, IdentityError, MalformedMessageError
from fedcrypt.identity import NodeIdentity
from fedcrypt.secagg import SecAggConfig

__all__ = [
    "NODE_STATE_KEY",
    "NODE_IDENTITY",
    "StateKey",
    "default_state_key_path",
    "node_state_key",
    "dump_config",
    "load_config",
]

log = logging.getLogger("fedcrypt.integrations.flower")

#: Node-config key: a file with this node's 32-byte state key (created if it does not exist).
NODE_STATE_KEY = "fedcrypt-state-key"
#: Node-config key: the node's identity key file (PKCS#8 PEM, :class:`~fedcrypt.identity.NodeIdentity`).
NODE_IDENTITY = "fedcrypt-identity"

_MAGIC = b"FCSL"
_VERSION = 1
_KEY_ID_BYTES = 8
_HEADER = struct.Struct(">4sB8s")
_KEY_BYTES = 32
_SEAL_INFO = b"fedcrypt/flower/state-seal/v1"
_KEY_ID_INFO = b"fedcrypt/flower/state-key-id/v1"
_AD_LABEL = b"fedcrypt/flower/sealed-state/v1"


# ============================================================================ the node's key
class StateKey:
    """The node-local key that seals what a fedcrypt mod keeps in ``Context.state``.

    Math: ``k = HKDF-SHA256(m, info="fedcrypt/flower/state-seal/v1")`` from the key
    material ``m`` (a key file's 32 bytes, or the identity key's raw private bytes); a
    record is ``AES-256-GCM_k(nonce, state, ad)`` with a fresh 96-bit nonce from
    ``os.urandom`` and ``ad`` naming the record, run and node (see the module docstring).

    Args:
        material: the key material (at least 32 bytes).
        source: where it came from (``"file"``, ``"identity"``, ``"default-file"``), for
            messages and the ``repr``.
    """

    __slots__ = ("_key", "_key_id", "source")

    def __init__(self, material: Secret, source: str) -> None:
        if not isinstance(material, Secret) or len(material) < _KEY_BYTES:
            raise TypeError("material must be a Secret of at least 32 bytes")
        self._key = hkdf_sha256(material, salt=None, info=_SEAL_INFO)
        self._key_id = hkdf_sha256(material, salt=None, info=_KEY_ID_INFO, length=_KEY_ID_BYTES).reveal()
        self.source = source

    @classmethod
    def from_identity(cls, identity: NodeIdentity) -> "StateKey":
        """The state key derived from a node's identity (its private key never leaves it)."""
        if not isinstance(identity, NodeIdentity):
            raise TypeError(f"identity must be a NodeIdentity, got {type(identity).__name__}")
        return cls(identity.signing_key.private_bytes(), "identity")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, create: bool = True, source: str = "file") -> "StateKey":
        """Read a 32-byte key file; with ``create``, write a fresh one (mode 0600) if it does not exist.

        Raises:
            IdentityError: the file is not 32 bytes, or cannot be read or created.
        """
        target = Path(path)
        try:
            if create and not target.exists():
                _create_key_file(target)
            with open(target, "rb") as handle:
                data = handle.read(_KEY_BYTES + 1)
        except OSError as exc:
            raise IdentityError(
                f"cannot read or create the fedcrypt state key file ({type(exc).__name__}); name a readable one in "
                f"node config {NODE_STATE_KEY}"
            ) from None
        if len(data) != _KEY_BYTES:
            raise IdentityError(f"a fedcrypt state key file holds exactly {_KEY_BYTES} bytes, this one {len(data)}")
        return cls(Secret(data), source)

    @property
    def key_id(self) -> bytes:
        """8 public bytes that name this key (HKDF of the material), written in every record."""
        return self._key_id

    def __repr__(self) -> str:
        return f"StateKey(source={self.source!r}, id={self._key_id.hex()})"

    __str__ = __repr__

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("a StateKey is node-local and is not pickled")

    # ------------------------------------------------------------------ records
    def _associated_data(self, record: str, run_id: int, node_id: int) -> bytes:
        name = record.encode("ascii")
        if not 0 < len(name) < 256:
            raise ValueError("record names are 1 to 255 ASCII characters")
        return b"".join(
            [
                _AD_LABEL,
                struct.pack(">B", len(name)),
                name,
                struct.pack(">QQ", run_id % (1 << 64), node_id % (1 << 64)),
                _HEADER.pack(_MAGIC, _VERSION, self._key_id),
            ]
        )

    def seal(self, state: bytes, *, record: str, run_id: int, node_id: int) -> bytes:
        """``state`` sealed for the record ``record`` of node ``node_id`` in run ``run_id``."""
        header = _HEADER.pack(_MAGIC, _VERSION, self._key_id)
        return header + aead_encrypt(self._key, state, self._associated_data(record, run_id, node_id))

    def open(self, sealed: bytes, *, record: str, run_id: int, node_id: int) -> bytes:
        """The state of a record :meth:`seal` wrote for the same record, run and node.

        Raises:
            MalformedMessageError: not a sealed record (bad magic, unknown version, too short).
            DecryptionError: sealed under another state key, or tampered with, or written
                for another record, run or node.
        """
        if not isinstance(sealed, (bytes, bytearray)):
            raise MalformedMessageError(f"sealed {record} is a {type(sealed).__name__}, not bytes")
        if len(sealed) < _HEADER.size + AEAD_OVERHEAD:
            raise MalformedMessageError(f"sealed {record}: {len(sealed)} bytes, shorter than a sealed record")
        magic, version, key_id = _HEADER.unpack_from(sealed)
        if magic != _MAGIC:
            raise MalformedMessageError(f"sealed {record}: bad magic (not a sealed fedcrypt record)")
        if version != _VERSION:
            raise MalformedMessageError(f"sealed {record}: unsupported version {version} (this fedcrypt reads {_VERSION})")
        if not constant_time_equal(key_id, self._key_id):
            raise DecryptionError(
                f"{record} was sealed under another state key than this process's ({self.source}): the node's key "
                f"file or identity changed, or its processes do not share one (see node config {NODE_STATE_KEY})"
            )
        try:
            return aead_decrypt(self._key, bytes(sealed[_HEADER.size :]), self._associated_data(record, run_id, node_id))
        except DecryptionError:
            raise DecryptionError(
                f"{record} does not open: it was tampered with, or moved from another record, run or node"
            ) from None


def _create_key_file(path: Path) -> None:
    """Write 32 random bytes to ``path`` (0600), atomically: a concurrent creator's file wins."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{random_seed(8).reveal().hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(_KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created it first: then its key is the node's
            log.info("fedcrypt: created the state key file %s (it seals what the mods keep in Context.state)", path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)


def default_state_key_path() -> Path:
    """``$FLWR_HOME/fedcrypt/state.key``, or ``~/.flwr/fedcrypt/state.key`` without ``FLWR_HOME``."""
    home = os.environ.get("FLWR_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".flwr"
    return base / "fedcrypt" / "state.key"


def _setting(ctxt: Any, key: str) -> str | None:
    value = ctxt.node_config.get(key) if ctxt.node_config is not None else None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise IdentityError(f"node config {key} must be a string (a file path), got {type(value).__name__}")
    return value


def node_state_key(ctxt: Any, *, key_path: str | None = None, identity_path: str | None = None) -> StateKey:
    """This node's state key, from its node config or the mod's arguments (order in the module docstring).

    Args:
        ctxt: the message's Flower ``Context`` (only ``node_config`` is read; never its state).
        key_path: the mod's ``state_key_path``, used when node config names no key file.
        identity_path: the mod's ``identity_path``, used when node config names no identity.

    Raises:
        IdentityError: a key or identity file that cannot be read, or a non-string setting.
    """
    path = _setting(ctxt, NODE_STATE_KEY) or key_path
    if path is not None:
        return StateKey.from_file(path)
    identity = _setting(ctxt, NODE_IDENTITY) or identity_path
    if identity is not None:
        return StateKey.from_identity(NodeIdentity.load(identity))
    return StateKey.from_file(default_state_key_path(), source="default-file")


def seal_record(ctxt: Any, key: StateKey, record: str, state: bytes) -> dict[str, bytes]:
    """The fields of ``record`` that keep ``state`` sealed in ``ctxt.state``."""
    return {"sealed": key.seal(state, record=record, run_id=ctxt.run_id, node_id=ctxt.node_id)}


def open_record(ctxt: Any, key: StateKey, record: str) -> bytes:
    """The state kept in ``ctxt.state[record]`` (see :meth:`StateKey.open` for the errors)."""
    kept = ctxt.state[record]
    if set(kept.keys()) - {"sealed", "stage"} or "sealed" not in kept.keys():
        raise MalformedMessageError(f"{record} in Context.state is not a sealed fedcrypt record")
    return key.open(kept["sealed"], record=record, run_id=ctxt.run_id, node_id=ctxt.node_id)


# ============================================================================ setup config bytes
_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR = range(6)
_TUPLE, _FLOAT = 10, 16
_CONFIG_FIELDS = 10


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
