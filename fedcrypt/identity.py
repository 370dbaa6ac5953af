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

Invariants:

* ``Roster.from_bytes(r.to_bytes()) == r`` and the digest is SHA-256 of those bytes;
* a roster loaded with ``expected_digest`` is the pinned one, compared in constant time;
* no private key is reachable through ``repr``/``str`` or an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedcrypt.crypto import Ed25519KeyPair
from fedcrypt.errors import IdentityError

__all__ = ["NodeIdentity", "Roster", "MAX_MEMBERS"]

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

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("a NodeIdentity holds a private key and is not pickled; use save()")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key as unencrypted PKCS#8 PEM, readable by the owner only (0600).

        Raises:
            FileExistsError: ``path`` exists (an identity is never overwritten).
        """
        pem = self._signing_key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
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

    def __iter__(self) -> Iterable[str]:  # type: ignore[override]
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
