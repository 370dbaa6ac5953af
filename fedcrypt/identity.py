"""Node identities and the federation's roster: who may take part, and how to check it.

A *node identity* is an Ed25519 signing key (RFC 8032) that a node keeps to itself, in a
PKCS#8 PEM file readable only by its owner. The *roster* is the federation's list of
members: one name and one Ed25519 verification key each. It is handed to every node out of
band (with the deployment's configuration) and pinned by its SHA-256 digest, so a server
cannot add a member, drop one or swap a key without every node noticing.

With a roster the protections run in their malicious-server mode: SecAgg clients sign
their keys, masking attestations and survivor sets and check each other's signatures
against the roster (:class:`~fedcrypt.secagg.SecAggConfig` ``verify_survivors=True``).

Roster file (UTF-8, canonical: anything else is refused, so one roster has one digest)::

    fedcrypt-roster/v1
    <name> <64 hex digits of the raw public key>
    ...                                   (one line per member, sorted by name, each ending in \\n)

Names are 1-64 characters of ``A-Z a-z 0-9 . _ -``; names and keys are unique.

Relation to Flower's node authentication: Flower authenticates SuperNodes to the SuperLink
with ECDSA (P-384) keys, which protects the *server* against unknown nodes. The roster
protects the *nodes* against the server: it must come from outside the server's control
(the federation's configuration, not the SuperLink), and it uses Ed25519 keys. A deployment
may generate both per node; they are not interchangeable.

A node's *state key* (:class:`StateKey`) seals what it keeps between messages where others
can read it (Flower's ``Context.state``): from a key file, or derived from its identity key.

Invariants:

* ``Roster.from_bytes(r.to_bytes()) == r`` and the digest is SHA-256 of those bytes;
* a roster loaded with ``expected_digest`` is the pinned one, compared in constant time;
* no private key is reachable through ``repr``/``str`` or an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import struct
from pathlib import Path
from typing import Iterator, Mapping, NoReturn, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedcrypt.crypto import (
    AEAD_OVERHEAD,
    Ed25519KeyPair,
    Secret,
    aead_decrypt,
    aead_encrypt,
    constant_time_equal,
    hkdf_sha256,
    random_seed,
)
from fedcrypt.errors import DecryptionError, IdentityError, MalformedMessageError

__all__ = ["NodeIdentity", "Roster", "StateKey", "MAX_MEMBERS", "load_credentials"]

log = logging.getLogger(__name__)

_HEADER = "fedcrypt-roster/v1\n"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: As many members as SecAgg has client ids.
MAX_MEMBERS = (1 << 16) - 2
_MAX_ROSTER_BYTES = len(_HEADER) + MAX_MEMBERS * (64 + 1 + 64 + 1)
_MAX_KEY_FILE_BYTES = 4096


class NodeIdentity:
    """A node's Ed25519 signing key.

    Args:
        signing_key: the key pair; :meth:`generate` or :meth:`load` make one.
    """

    __slots__ = ("_signing_key",)

    def __init__(self, signing_key: Ed25519KeyPair) -> None:
        if not isinstance(signing_key, Ed25519KeyPair):
            raise TypeError(f"signing_key must be an Ed25519KeyPair, got {type(signing_key).__name__}")
        self._signing_key = signing_key

    @classmethod
    def generate(cls) -> "NodeIdentity":
        """A fresh identity (the private key from the OS's CSPRNG, through ``cryptography``)."""
        return cls(Ed25519KeyPair.generate())

    @property
    def signing_key(self) -> Ed25519KeyPair:
        """The key pair, for :class:`~fedcrypt.secagg.ClientProtocol` ``signing_key``."""
        return self._signing_key

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw verification key, as the roster lists it."""
        return self._signing_key.public_bytes

    def __repr__(self) -> str:
        return f"NodeIdentity(public={self.public_bytes.hex()[:16]}...)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a NodeIdentity holds a private key and is not pickled; use save()")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key as unencrypted PKCS#8 PEM, readable by the owner only (0600).

        Raises:
            FileExistsError: ``path`` exists (an identity is never overwritten).
        """
        pem = self._signing_key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "NodeIdentity":
        """Read a key written by :meth:`save` (or any PKCS#8 PEM Ed25519 private key).

        Raises:
            IdentityError: not a PEM Ed25519 private key, or larger than a key file can be.
        """
        data = Path(path).read_bytes()
        if len(data) > _MAX_KEY_FILE_BYTES:
            raise IdentityError(f"an identity file is at most {_MAX_KEY_FILE_BYTES} bytes, got {len(data)}")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise IdentityError("the identity file is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError("the identity file holds a key of another type than Ed25519")
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return cls(Ed25519KeyPair.from_private_bytes(raw))


class Roster:
    """The federation's members: name -> 32-byte Ed25519 verification key.

    Args:
        members: name -> raw public key.

    Raises:
        IdentityError: a bad name, a key that is not a valid Ed25519 point, a repeated key,
            no member, or more than :data:`MAX_MEMBERS`.
    """

    __slots__ = ("_members", "_bytes", "_digest")

    def __init__(self, members: Mapping[str, bytes]) -> None:
        if not isinstance(members, Mapping):
            raise TypeError(f"members must be a mapping of name to public key, got {type(members).__name__}")
        if not 1 <= len(members) <= MAX_MEMBERS:
            raise IdentityError(f"a roster has 1 to {MAX_MEMBERS} members, got {len(members)}")
        checked: dict[str, bytes] = {}
        for name, key in members.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise IdentityError(f"member name {name!r} is not 1-64 characters of A-Z a-z 0-9 . _ -")
            if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
                raise IdentityError(f"the key of member {name!r} is not 32 raw bytes")
            try:
                Ed25519PublicKey.from_public_bytes(bytes(key))
            except ValueError:
                raise IdentityError(f"the key of member {name!r} is not an Ed25519 public key") from None
            checked[name] = bytes(key)
        if len(set(checked.values())) != len(checked):
            raise IdentityError("two roster members share one key")
        self._members = dict(sorted(checked.items()))
        text = _HEADER + "".join(f"{name} {key.hex()}\n" for name, key in self._members.items())
        self._bytes = text.encode("ascii")
        self._digest = hashlib.sha256(self._bytes).digest()

    # ------------------------------------------------------------------ reading
    @property
    def names(self) -> tuple[str, ...]:
        """Member names, sorted."""
        return tuple(self._members)

    def key(self, name: str) -> bytes:
        """The verification key of ``name``.

        Raises:
            IdentityError: ``name`` is not a member.
        """
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise IdentityError(f"{name!r} is not a roster member") from None

    def verify_keys(self, names: Sequence[str]) -> dict[int, bytes]:
        """Client id -> key for a round whose client ``i`` is member ``names[i]``.

        Raises:
            IdentityError: a name is not a member, or appears twice.
        """
        if len(set(names)) != len(names):
            raise IdentityError("a member appears twice among the round's clients")
        return {i: self.key(name) for i, name in enumerate(names)}

    def name_of(self, public_bytes: bytes) -> str:
        """The member whose key is ``public_bytes``.

        Raises:
            IdentityError: no member has it.
        """
        for name, key in self._members.items():
            if hmac.compare_digest(key, bytes(public_bytes)):
                return name
        raise IdentityError("this key is not on the roster")

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Roster) and self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return f"Roster(members={len(self._members)}, digest={self._digest.hex()[:16]}...)"

    # ------------------------------------------------------------------ bytes and files
    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: what a deployment pins."""
        return self._digest

    def to_bytes(self) -> bytes:
        """The canonical file contents."""
        return self._bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_digest: bytes | None = None) -> "Roster":
        """Parse a roster; with ``expected_digest``, refuse any other roster.

        Raises:
            IdentityError: not canonical roster bytes, or not the pinned roster.
        """
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        if len(data) > _MAX_ROSTER_BYTES:
            raise IdentityError(f"a roster is at most {_MAX_ROSTER_BYTES} bytes, got {len(data)}")
        if expected_digest is not None:
            if not isinstance(expected_digest, (bytes, bytearray)) or len(expected_digest) != 32:
                raise TypeError("expected_digest must be 32 bytes (SHA-256)")
            if not hmac.compare_digest(hashlib.sha256(bytes(data)).digest(), bytes(expected_digest)):
                raise IdentityError("the roster is not the one pinned by its digest")
        try:
            text = bytes(data).decode("ascii")
        except UnicodeDecodeError:
            raise IdentityError("a roster is ASCII text") from None
        if not text.startswith(_HEADER):
            raise IdentityError(f"a roster starts with the line {_HEADER.strip()!r}")
        body = text[len(_HEADER) :]
        if not body.endswith("\n"):
            raise IdentityError("every roster line ends with a newline")
        members: dict[str, bytes] = {}
        for number, line in enumerate(body[:-1].split("\n"), start=2):
            parts = line.split(" ")
            if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
                raise IdentityError(f"roster line {number} is not '<name> <64 lowercase hex digits>'")
            if parts[0] in members:
                raise IdentityError(f"roster line {number} repeats member {parts[0]!r}")
            members[parts[0]] = bytes.fromhex(parts[1])
        roster = cls(members)
        if roster.to_bytes() != bytes(data):
            raise IdentityError("the roster is not in canonical form (members sorted by name)")
        return roster

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, expected_digest: bytes | None = None) -> "Roster":
        """Read a roster file (see :meth:`from_bytes`)."""
        with open(path, "rb") as handle:
            data = handle.read(_MAX_ROSTER_BYTES + 1)
        return cls.from_bytes(data, expected_digest=expected_digest)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the canonical roster file."""
        Path(path).write_bytes(self._bytes)


def load_credentials(identity_path: str | None, roster_path: str | None, roster_digest: str | None) -> tuple["Roster | None", "NodeIdentity | None"]:
    """A node's pinned roster and its identity, from the two files and the roster's SHA-256 (hex).

    Returns ``(None, None)`` when none of the three is given (the node has no roster).

    Raises:
        IdentityError: only some of the three are given, a digest that is not 64 hex digits,
            a roster that does not match it, or a file that does not load.
    """
    if identity_path is None and roster_path is None and roster_digest is None:
        return None, None
    if identity_path is None or roster_path is None or roster_digest is None:
        raise IdentityError("an identity, a roster and the roster's digest go together")
    try:
        pinned = bytes.fromhex(roster_digest)
    except ValueError:
        raise IdentityError("the roster digest is not hex") from None
    if len(pinned) != 32:
        raise IdentityError("the roster digest is a SHA-256 digest (64 hex digits)")
    return Roster.load(roster_path, expected_digest=pinned), NodeIdentity.load(identity_path)


# ============================================================================ state key
_MAGIC = b"FCSL"
_VERSION = 1
_KEY_ID_BYTES = 8
_SEALED_HEADER = struct.Struct(">4sB8s")
_KEY_BYTES = 32
_SEAL_INFO = b"fedcrypt/flower/state-seal/v1"
_KEY_ID_INFO = b"fedcrypt/flower/state-key-id/v1"
_AD_LABEL = b"fedcrypt/flower/sealed-state/v1"


class StateKey:
    """A node-local key that seals the state a node keeps between messages (a protocol
    object's ``to_state_bytes``) where others can read it, e.g. Flower's ``Context.state``.

    Math: ``k = HKDF-SHA256(m, info="fedcrypt/flower/state-seal/v1")`` from the key
    material ``m`` (a key file's 32 bytes, or the identity key's raw private bytes); a
    record is ``AES-256-GCM_k(nonce, state, ad)`` with a fresh 96-bit nonce from
    ``os.urandom``. Sealed record, version 1::

        "FCSL" | version (1) | key id (8) | nonce (12) | AES-256-GCM ciphertext | tag (16)
        ad: "fedcrypt/flower/sealed-state/v1" | record name (u8 length, ASCII)
            | run id u64 | node id u64 | "FCSL" | version | key id

    The key id (HKDF of the material, public) tells "sealed under another key" apart from
    "tampered". What it defends: a reader of the sealed bytes who cannot read the key file
    or identity key learns no secret, and cannot swap or alter a record unnoticed (the
    associated data binds record, run and node). Not: rolling a record back to an earlier
    sealed copy of itself, or a reader of the key file.

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
                f"cannot read or create the fedcrypt state key file ({type(exc).__name__}); name a readable one in the node's configuration"
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

    def __reduce__(self) -> NoReturn:
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
                _SEALED_HEADER.pack(_MAGIC, _VERSION, self._key_id),
            ]
        )

    def seal(self, state: bytes, *, record: str, run_id: int, node_id: int) -> bytes:
        """``state`` sealed for the record ``record`` of node ``node_id`` in run ``run_id``."""
        header = _SEALED_HEADER.pack(_MAGIC, _VERSION, self._key_id)
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
        if len(sealed) < _SEALED_HEADER.size + AEAD_OVERHEAD:
            raise MalformedMessageError(f"sealed {record}: {len(sealed)} bytes, shorter than a sealed record")
        magic, version, key_id = _SEALED_HEADER.unpack_from(sealed)
        if magic != _MAGIC:
            raise MalformedMessageError(f"sealed {record}: bad magic (not a sealed fedcrypt record)")
        if version != _VERSION:
            raise MalformedMessageError(f"sealed {record}: unsupported version {version} (this fedcrypt reads {_VERSION})")
        if not constant_time_equal(key_id, self._key_id):
            raise DecryptionError(
                f"{record} was sealed under another state key than this process's ({self.source}): the node's key "
                "file or identity changed, or its processes do not share one"
            )
        try:
            return aead_decrypt(self._key, bytes(sealed[_SEALED_HEADER.size :]), self._associated_data(record, run_id, node_id))
        except DecryptionError:
            raise DecryptionError(f"{record} does not open: it was tampered with, or moved from another record, run or node") from None


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
            log.info("fedcrypt: created the state key file %s (it seals what a node keeps between messages)", path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
