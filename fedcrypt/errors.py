"""The one exception hierarchy of fedcrypt.

Every error that fedcrypt raises on bad input is a :class:`FedcryptError` (or, for
misuse of a plain argument, a ``TypeError``/``ValueError`` with an exact message).
Several classes also derive from the matching built-in (``ValueError``,
``ImportError``) so that generic ``except ValueError`` code keeps working.

Rules for every subclass:

* messages name the bound, field or stage that was broken, never a key, seed,
  share or plaintext value;
* protocol errors carry ``party``, ``round`` and ``stage`` attributes (any of them may
  be ``None`` when unknown) so a transport can log *where* a round failed;
* a handler raises before it mutates state, so catching one of these leaves the
  object that raised it exactly as it was.

The tree::

    FedcryptError
    +-- MissingExtraError (ImportError)
    +-- SpecMismatchError (ValueError)
    +-- IdentityError (ValueError)       (a node identity or roster file is unreadable, or not the pinned one)
    +-- AggregationModeError (ValueError)
    +-- EncodingError (ValueError)
    |   +-- OverflowRiskError
    +-- CryptoError
    |   +-- DecryptionError
    |   +-- InvalidSignature
    |   +-- InvalidShare
    +-- ProtocolError
    |   +-- LocalProtocolError          (our own object was driven out of order)
    |   +-- RemoteProtocolError         (a peer sent something we refuse)
    |   |   +-- MalformedMessageError   (cannot be decoded: truncated, oversized, bad version)
    |   |   |   +-- RecordMismatchError (a transport envelope, e.g. a Flower message, has missing or extra records)
    |   |   +-- UnexpectedMessageError  (well formed, wrong round / stage / sender, replay)
    |   |   +-- ProtocolViolationError  (a request a correct peer never makes)
    |   +-- RoundAbortedError           (too few parties left to finish safely)
    +-- HEError
    |   +-- ContextMismatchError
    |   +-- SecretKeyError
    +-- PrivacyError
        +-- BudgetExceededError
        +-- LedgerError

One warning category, not an error: :class:`HonestButCuriousWarning` (``UserWarning``), emitted
when a protocol runs in a mode that is secure only against a server that follows it.
"""

from __future__ import annotations

__all__ = [
    "FedcryptError",
    "HonestButCuriousWarning",
    "MissingExtraError",
    "SpecMismatchError",
    "IdentityError",
    "AggregationModeError",
    "EncodingError",
    "OverflowRiskError",
    "CryptoError",
    "DecryptionError",
    "InvalidSignature",
    "InvalidShare",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "MalformedMessageError",
    "RecordMismatchError",
    "UnexpectedMessageError",
    "ProtocolViolationError",
    "RoundAbortedError",
    "HEError",
    "ContextMismatchError",
    "SecretKeyError",
    "PrivacyError",
    "BudgetExceededError",
    "LedgerError",
]


class FedcryptError(Exception):
    """Root of every error fedcrypt raises on purpose."""


class MissingExtraError(FedcryptError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, detail: str = "") -> None:
        self.package = package
        self.extra = extra
        msg = f"{package!r} is required for this feature but is not installed; install it with: pip install 'fedcrypt[{extra}]'"
        if detail:
            msg = f"{msg} ({detail})"
        super().__init__(msg, name=package)


class SpecMismatchError(FedcryptError, ValueError):
    """A mapping of tensors, or a vector, does not match the expected TensorSpec."""


class IdentityError(FedcryptError, ValueError):
    """A node identity or roster is malformed, or a roster is not the one pinned by digest."""


class AggregationModeError(FedcryptError, ValueError):
    """An aggregation mode that secure aggregation cannot run (it needs individual updates).

    Modes such as stacking LoRA adapters (FLoRA) concatenate each client's own ``A`` and
    ``B``; under SecAgg or CKKS the server only ever holds the sum, so they are refused.
    """


class EncodingError(FedcryptError, ValueError):
    """A vector cannot be encoded or decoded with the given codec parameters."""


class OverflowRiskError(EncodingError):
    """Codec parameters for which a sum of encodings could wrap around the ring."""


class CryptoError(FedcryptError):
    """A cryptographic check failed."""


class DecryptionError(CryptoError):
    """Authenticated decryption failed: wrong key, wrong associated data or tampering."""


class InvalidSignature(CryptoError):
    """A signature does not verify under the claimed public key."""


class InvalidShare(CryptoError):
    """A secret-share set is insufficient, duplicated or inconsistent."""


class ProtocolError(FedcryptError):
    """A protocol step could not be carried out.

    Attributes:
        party: id of the party whose object raised (or that misbehaved), if known.
        round: the protocol round, if known.
        stage: the protocol stage (an Enum member or its name), if known.
    """

    def __init__(
        self,
        message: str,
        *,
        party: int | str | None = None,
        round: int | None = None,  # noqa: A002 - the protocol's own word
        stage: object | None = None,
    ) -> None:
        self.party = party
        self.round = round
        self.stage = stage
        where = []
        if party is not None:
            where.append(f"party={party}")
        if round is not None:
            where.append(f"round={round}")
        if stage is not None:
            where.append(f"stage={getattr(stage, 'name', stage)}")
        super().__init__(f"{message} [{', '.join(where)}]" if where else message)


class LocalProtocolError(ProtocolError):
    """Our own protocol object was used out of order (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """A peer sent input that this party refuses."""


class MalformedMessageError(RemoteProtocolError):
    """Bytes that do not decode: truncated, oversized, wrong magic, version or length."""


class RecordMismatchError(MalformedMessageError):
    """A transport envelope (e.g. a Flower message) lacks expected records or fields, or has extra ones.

    Attributes:
        missing: names that were expected and absent.
        extra: names that were present and not expected.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        party: int | str | None = None,
        round: int | None = None,  # noqa: A002 - the protocol's own word
        stage: object | None = None,
    ) -> None:
        self.missing = tuple(missing)
        self.extra = tuple(extra)
        super().__init__(message, party=party, round=round, stage=stage)


class UnexpectedMessageError(RemoteProtocolError):
    """A well-formed message for another round, stage or sender, or a replay."""


class ProtocolViolationError(RemoteProtocolError):
    """A request that no honest peer sends (e.g. both shares of one client)."""


class RoundAbortedError(ProtocolError):
    """Too few parties remain to finish the round without revealing anything more."""


class HEError(FedcryptError):
    """Homomorphic-encryption failure."""


class ContextMismatchError(HEError, ValueError):
    """A ciphertext or context was made under different parameters or keys."""


class SecretKeyError(HEError):
    """A secret key is present where it must not be, or absent where it is needed."""


class PrivacyError(FedcryptError):
    """Differential-privacy accounting failure."""


class BudgetExceededError(PrivacyError):
    """A spend would take the privacy budget past its limit; nothing was recorded."""


class LedgerError(PrivacyError):
    """The privacy ledger is unreadable, inconsistent or was opened with other settings."""


class HonestButCuriousWarning(UserWarning):
    """A protocol runs in its honest-but-curious mode: secure only against a server that
    follows the protocol. A server that deviates (withholds or reorders messages, names
    different survivors to different clients, swaps keys) can recover a client's input.
    Give the clients identities and use the malicious-server mode instead."""


class VerificationError(CryptoError):
    """A verified-aggregation proof or joint-randomness check rejected a report (PINE).

    Says which check failed, never a share, seed or proof value.
    """


__all__.append("VerificationError")
