"""The SecAgg server: a sans-IO state machine that never blocks and never times out by itself.

The transport feeds client messages with :meth:`ServerProtocol.receive` and, when it stops
waiting, calls :meth:`ServerProtocol.end_stage`: every client that has not answered the
current stage is from then on dropped. Transition table (stage -> accepted message ->
``end_stage`` output, next stage)::

    ADVERTISE_KEYS     AdvertiseKeys          -> KeyDirectory per client      SHARE_KEYS
    SHARE_KEYS         EncryptedShares        -> ShareBundle per client       MASKED_INPUT
    MASKED_INPUT       MaskedInput            -> SurvivorList per client      CONSISTENCY_CHECK (verify_survivors)
                                              -> UnmaskRequest per client     UNMASK            (otherwise)
    CONSISTENCY_CHECK  ConsistencySignature   -> UnmaskRequest per client     UNMASK
                                                 (each with a quorum of the signatures)
    UNMASK             UnmaskShares           -> {} and :attr:`result`        DONE
    DONE, ABORTED      (nothing)

Invariants:

* Any other message raises :class:`~fedcrypt.errors.UnexpectedMessageError`; so does a
  second message from one client in one stage (a replay) and a message from a client that
  was already dropped. ``receive`` validates everything before it stores anything.
* Masked inputs are added to one running ring sum as they arrive: memory is O(d), not
  O(n d).
* ``end_stage`` raises :class:`~fedcrypt.errors.RoundAbortedError` and moves to
  ``ABORTED`` when some client's secrets could no longer be reconstructed from ``t``
  shares; it never returns a wrong sum.
* Per client, the server only ever asks for (and accepts) self-mask shares if it survived
  and mask-key shares if it dropped; the two sets are disjoint by construction.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

import numpy as np

from fedcrypt.crypto import Secret, Share, X25519KeyPair, ed25519_verify, mask_accumulate, shamir_combine, shamir_decode, x25519_secret_matches
from fedcrypt.errors import (
    CryptoError,
    InvalidShare,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)

from . import keyschedule
from .config import SecAggConfig
from .messages import (
    MESSAGE_CLASSES,
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    MessageType,
    ShareBundle,
    Stage,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode_message,
)

__all__ = ["ServerProtocol", "AggregationResult"]


@dataclass(frozen=True, slots=True, eq=False)
class AggregationResult:
    """The outcome of a round: the exact ring sum of the survivors' inputs.

    ``refused``: the clients whose unmask shares were wrong (left out; the secrets were rebuilt
    from the others' shares, see :meth:`ServerProtocol.refused`)."""

    ring_sum: np.ndarray = field(repr=False)
    survivors: tuple[int, ...]
    refused: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"AggregationResult(survivors={len(self.survivors)}, length={self.ring_sum.shape[0]}, refused={len(self.refused)})"


_EXPECTED = {
    Stage.ADVERTISE_KEYS: AdvertiseKeys,
    Stage.SHARE_KEYS: EncryptedShares,
    Stage.MASKED_INPUT: MaskedInput,
    Stage.CONSISTENCY_CHECK: ConsistencySignature,
    Stage.UNMASK: UnmaskShares,
}


class ServerProtocol:
    """The server of a SecAgg / SecAgg+ round (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020).

    Math: the server adds ``y_u`` of every client ``u`` in ``U3`` (the masked-input
    senders) into ``S = sum y_u`` in Z_(2^bits), then reconstructs ``b_u`` for ``u`` in ``U3``
    and ``s_v^SK`` for ``v`` in ``U2 - U3`` (shared keys, then dropped) from ``t`` Shamir shares
    each and returns

        S - sum_{u in U3} PRG(b_u) - sum_{v in U2-U3} sum_{u in N(v) and U3} sign(u, v) PRG(s_uv)
          = sum_{u in U3} x_u.

    Threat model: this object is the honest server's logic; the clients are the ones that
    defend against a malicious server. Clients' messages are validated strictly (ids,
    stages, share points, that a reconstructed mask key matches its advertised public key),
    so a malformed or replayed message changes nothing. The transport must authenticate
    who sent a message (the ``sender`` field is trusted as the channel's identity).

    One bad client never ends the round by itself (attacker review 5): with ``verify_keys``
    (the roster's public keys, malicious-server mode) every signature a client sends (its
    signed advert, its masking attestation, its consistency signature) is verified on
    receipt against that client's key and against what every honest client will check it
    on (the same round context, key-directory digest and survivor set); a bad one is
    refused with :class:`~fedcrypt.errors.InvalidSignature` before anything is stored, so
    the signer is dropped like a client that did not answer, and the server never forwards
    a statement that would make the honest clients refuse the request carrying it.
    Verification needs only public keys; it adds no trust (the clients still verify all).

    Args:
        config: the round parameters.
        round_id: the round number.
        associated_data: the bytes all clients bind into the round; adverts from clients
            with other bytes are refused.
        dimension: the vector length; default: fixed by the first masked input.
        verify_keys: every client's Ed25519 public key by id (the roster's, as the clients
            get them), with ``verify_survivors`` only: the server then refuses a bad
            signature on receipt. Without it the server forwards signatures unchecked and a
            client that signs badly makes the honest clients refuse their requests.
    """

    __slots__ = (
        "config",
        "round_id",
        "_context",
        "_verify_keys",
        "_directory_digest",
        "_dimension",
        "_stage",
        "_adverts",
        "_public_keys",
        "_probe",
        "_u1",
        "_ciphertexts",
        "_u2",
        "_accumulator",
        "_groups",
        "_labels",
        "_excluded",
        "_u3",
        "_commitments",
        "_attestations",
        "_signatures",
        "_u4",
        "_seed_shares",
        "_key_shares",
        "_responders",
        "_refused",
        "_result",
    )

    def __init__(
        self,
        config: SecAggConfig,
        *,
        round_id: int = 0,
        associated_data: bytes = b"",
        dimension: int | None = None,
        verify_keys: Mapping[int, bytes] | None = None,
    ) -> None:
        if not isinstance(config, SecAggConfig):
            raise TypeError(f"config must be a SecAggConfig, got {type(config).__name__}")
        if not isinstance(round_id, int) or isinstance(round_id, bool) or not 0 <= round_id < 1 << 64:
            raise ValueError(f"round_id must be an integer in [0, 2^64), got {round_id!r}")
        if dimension is not None and (not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 0):
            raise ValueError(f"dimension must be None or a non-negative integer, got {dimension!r}")
        if verify_keys is not None:
            if not config.verify_survivors:
                raise ValueError("verify_keys were given to an honest-but-curious round (verify_survivors=False)")
            if not isinstance(verify_keys, Mapping) or set(verify_keys) != set(range(config.num_clients)):
                raise ValueError("verify_keys needs one Ed25519 public key per client id")
            if any(not isinstance(k, bytes) or len(k) != 32 for k in verify_keys.values()):
                raise ValueError("verify_keys values must be 32-byte raw Ed25519 public keys")
        self.config = config
        self.round_id = round_id
        self._context = keyschedule.round_context(config, round_id, associated_data)
        self._verify_keys = dict(verify_keys) if verify_keys is not None else None
        self._directory_digest = b""
        self._dimension = dimension
        self._stage = Stage.ADVERTISE_KEYS
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._public_keys: set[bytes] = set()
        self._probe = X25519KeyPair.generate()
        self._u1: frozenset[int] = frozenset()
        self._ciphertexts: dict[int, EncryptedShares] = {}
        self._u2: frozenset[int] = frozenset()
        self._accumulator: np.ndarray | None = None
        #: MASKED_INPUT: one running sum per group label (a transport's layout digest), and each sender's label
        self._groups: dict[bytes, np.ndarray] = {}
        self._labels: dict[int, bytes] = {}
        self._excluded: frozenset[int] = frozenset()
        self._u3: set[int] = set()
        self._commitments: dict[int, bytes] = {}
        self._attestations: dict[int, tuple[tuple[int, ...], bytes]] = {}
        self._signatures: dict[int, bytes] = {}
        self._u4: frozenset[int] = frozenset()
        self._seed_shares: dict[int, dict[int, Share]] = {}
        self._key_shares: dict[int, dict[int, Share]] = {}
        self._responders: set[int] = set()
        self._refused: dict[int, InvalidShare] = {}
        self._result: AggregationResult | None = None

    # ------------------------------------------------------------------ public
    @property
    def stage(self) -> Stage:
        """The stage whose client messages the server is collecting."""
        return self._stage

    @property
    def result(self) -> AggregationResult:
        """The aggregate, once the round is DONE."""
        if self._result is None:
            raise LocalProtocolError("the round has no result yet", party="server", round=self.round_id, stage=self._stage)
        return self._result

    @property
    def received(self) -> frozenset[int]:
        """Clients whose message for the current stage has been accepted."""
        return frozenset(self._collected())

    @property
    def refused(self) -> dict[int, InvalidShare]:
        """Clients refused at ``end_stage`` of UNMASK, by id, with why: one of their shares lay off
        the polynomial the other holders' shares and the secret's commitment or public key
        agree on (a message refused by :meth:`receive` raises instead and is never stored)."""
        return dict(self._refused)

    @property
    def excluded(self) -> frozenset[int]:
        """Clients whose masked input was set aside at the end of MASKED_INPUT because its group
        label (a transport's layout) was not the most common one; they count as dropped after
        masking (their self masks are never unmasked, so their inputs stay hidden)."""
        return self._excluded

    def share_kinds_revealed(self) -> dict[int, set[str]]:
        """For every client, which kinds of its shares the server holds ("self_mask", "mask_key")."""
        kinds: dict[int, set[str]] = {}
        for owner in self._seed_shares:
            kinds.setdefault(owner, set()).add("self_mask")
        for owner in self._key_shares:
            kinds.setdefault(owner, set()).add("mask_key")
        return kinds

    def __repr__(self) -> str:
        return f"ServerProtocol(round={self.round_id}, stage={self._stage.name}, received={len(self._collected())})"

    __str__ = __repr__

    def receive(self, message: Message | bytes, *, group: bytes = b"") -> None:
        """Accept one client message (object or bytes) for the current stage.

        ``group``: for a masked input, a label the transport gives it (the layout its vector was
        flattened with, say; at most 1 MiB, kept as its SHA-256). Each label is summed apart and at the end of
        MASKED_INPUT only the most common one is kept (a tie ends the round): one client whose
        input names another layout is then set aside (:attr:`excluded`) instead of getting every
        other client refused. The label is no secret and decides nothing else; a server could
        always set a client aside by ignoring its masked input.

        Raises:
            MalformedMessageError: bytes that do not decode (wrong length included).
            UnexpectedMessageError: wrong round or stage, unknown or dropped sender, replay.
            ProtocolViolationError / InvalidShare: content no honest client sends.
            InvalidSignature: with ``verify_keys``, a signature that does not verify under the
                sender's key (advert, masking attestation or consistency signature).
        """
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = self._decode(message)
        elif not isinstance(message, MESSAGE_CLASSES):
            raise TypeError(f"expected a SecAgg message or its bytes, got {type(message).__name__}")
        expected = _EXPECTED.get(self._stage)
        if expected is None or not isinstance(message, expected):
            raise self._unexpected(f"{type(message).__name__} is not accepted in this stage")
        if message.round_id != self.round_id:
            raise self._unexpected(f"message for round {message.round_id}")
        sender = message.party
        if not 0 <= sender < self.config.num_clients:
            raise self._unexpected(f"sender {sender} is not a client of this round")
        if sender in self._collected():
            raise self._unexpected(f"client {sender} already sent this stage's message (replay)")
        if sender not in self._alive():
            raise self._unexpected(f"client {sender} was dropped earlier in the round")
        if not isinstance(group, bytes) or len(group) > 1 << 20:
            raise TypeError("group must be bytes, at most 1 MiB")
        if isinstance(message, MaskedInput):
            self._on_masked_input(message, hashlib.sha256(group).digest())
        else:
            _HANDLERS[type(message)](self, message)

    def end_stage(self) -> dict[int, Message]:
        """Stop waiting: clients that have not answered this stage are dropped.

        Returns:
            The next request for every remaining client, by id ({} after the unmask stage,
            when :attr:`result` is ready).

        Raises:
            RoundAbortedError: too few clients remain; the server moves to ABORTED.
            InvalidShare: at the unmask stage, a share set is inconsistent or rebuilds a
                secret that does not match its commitment or public key (a client sent a
                corrupted share); the server moves to ABORTED rather than return a wrong sum.
            LocalProtocolError: the round is already over.
        """
        step = _ENDERS.get(self._stage)
        if step is None:
            raise LocalProtocolError("the round is over", party="server", round=self.round_id, stage=self._stage)
        try:
            return step(self)
        except (RoundAbortedError, InvalidShare):
            self._stage = Stage.ABORTED
            self._accumulator, self._groups = None, {}
            raise

    # ------------------------------------------------------------------ helpers
    def _decode(self, data: bytes | bytearray | memoryview) -> Message:
        data = bytes(data)
        if len(data) > 5 and data[5] == MessageType.MASKED_INPUT:
            return MaskedInput.from_bytes(data, expected_length=self._dimension)
        return decode_message(data)

    def _unexpected(self, text: str) -> UnexpectedMessageError:
        return UnexpectedMessageError(text, party="server", round=self.round_id, stage=self._stage)

    def _violation(self, text: str, sender: int) -> ProtocolViolationError:
        return ProtocolViolationError(text, party=sender, round=self.round_id, stage=self._stage)

    def _abort(self, text: str) -> RoundAbortedError:
        return RoundAbortedError(text, party="server", round=self.round_id, stage=self._stage)

    def _collected(self) -> Collection[int]:
        """The clients whose message of this stage was accepted (a set, or a dict keyed by client)."""
        collected: dict[Stage, Collection[int]] = {
            Stage.ADVERTISE_KEYS: self._adverts,
            Stage.SHARE_KEYS: self._ciphertexts,
            Stage.MASKED_INPUT: self._u3,
            Stage.CONSISTENCY_CHECK: self._signatures,
            Stage.UNMASK: self._responders,
        }
        return collected.get(self._stage, set())

    def _alive(self) -> Collection[int]:
        return {
            Stage.ADVERTISE_KEYS: range(self.config.num_clients),
            Stage.SHARE_KEYS: self._u1,
            Stage.MASKED_INPUT: self._u2,
            Stage.CONSISTENCY_CHECK: frozenset(self._u3),
            Stage.UNMASK: self._u4,
        }.get(self._stage, frozenset())

    def _holders(self, client: int) -> frozenset[int]:
        return self.config.holders(client, self.round_id)

    def _verify(self, sender: int, signature: bytes, statement: bytes, what: str) -> None:
        """Check ``sender``'s signature on ``statement`` against its roster key, as every client will."""
        assert self._verify_keys is not None  # every caller checks first that the round has verify keys
        try:
            ed25519_verify(self._verify_keys[sender], signature, statement)
        except InvalidSignature:
            raise InvalidSignature(f"client {sender} did not sign {what} (refused; the round goes on without it)") from None

    def _check_recoverable(self, owners: frozenset[int] | set[int], live: frozenset[int] | set[int], what: str) -> None:
        t = self.config.threshold
        if len(live) < t:
            raise self._abort(f"{len(live)} clients left after {what}, threshold is {t}")
        for owner in sorted(owners):
            count = len(self._holders(owner) & live)
            if count < t:
                raise self._abort(f"client {owner} has {count} live share holders after {what}, threshold is {t}")

    # ------------------------------------------------------------------ receive handlers
    def _on_advertise(self, message: AdvertiseKeys) -> None:
        if message.context != self._context:
            raise self._violation("advertised a different round context (config or associated data differ)", message.sender)
        if self.config.verify_survivors != bool(message.signature):
            raise self._violation("signature presence does not match verify_survivors", message.sender)
        if self._verify_keys is not None:
            self._verify(message.sender, message.signature, message.signed_bytes(), "its advertised keys")
        keys = (message.cipher_public_key, message.mask_public_key)
        if keys[0] == keys[1] or any(k in self._public_keys for k in keys):
            raise self._violation("advertised a public key that is already in use", message.sender)
        for key in keys:
            try:
                self._probe.exchange(key)  # the output is discarded: only low-order points fail
            except CryptoError:
                raise self._violation("advertised a low-order X25519 public key", message.sender) from None
        self._adverts[message.sender] = message
        self._public_keys.update(keys)

    def _on_encrypted_shares(self, message: EncryptedShares) -> None:
        sender = message.sender
        expected = sorted((self._holders(sender) & self._u1) - {sender})
        if [v for v, _ in message.ciphertexts] != expected:
            raise self._violation("share ciphertexts are not addressed to exactly the live neighbours", sender)
        self._ciphertexts[sender] = message

    def _on_masked_input(self, message: MaskedInput, group: bytes = b"") -> None:
        vector = message.vector
        sender = message.sender
        if self.config.verify_survivors != bool(message.attestation):
            raise self._violation("attestation presence does not match verify_survivors", sender)
        expected = tuple(sorted(self.config.neighbourhood(sender, self.round_id) - self._u2))
        if message.skipped != expected:
            raise self._violation("the masked input names other skipped neighbours than the ones that dropped", sender)
        if message.bits != self.config.bits:
            raise MalformedMessageError(f"MaskedInput: {message.bits}-bit vector in a {self.config.bits}-bit round")
        if self._dimension is not None and vector.shape[0] != self._dimension:
            raise MalformedMessageError(f"MaskedInput: length {vector.shape[0]}, expected {self._dimension}")
        if self._verify_keys is not None:
            statement = keyschedule.masking_bytes(
                round_id=self.round_id,
                context=self._context,
                directory=self._directory_digest,
                client=sender,
                skipped=message.skipped,
            )
            self._verify(sender, message.attestation, statement, "its masking attestation")
        total = self._groups.get(group)
        if total is not None and total.shape[0] != vector.shape[0]:  # no first-come length across groups either
            raise MalformedMessageError(f"MaskedInput: length {vector.shape[0]}, expected {total.shape[0]} (its group's)")
        if total is None:
            total = self._groups[group] = np.zeros(vector.shape[0], dtype=self.config.codec.ring_dtype)
        np.add(total, vector, out=total)
        self._labels[sender] = group
        self._commitments[sender] = message.self_mask_commitment
        if message.attestation:
            self._attestations[sender] = (message.skipped, message.attestation)
        self._u3.add(sender)

    def _on_signature(self, message: ConsistencySignature) -> None:
        if self._verify_keys is not None:
            statement = keyschedule.consistency_bytes(
                round_id=self.round_id, context=self._context, directory=self._directory_digest, survivors=tuple(sorted(self._u3))
            )
            self._verify(message.sender, message.signature, statement, "the survivor set")
        self._signatures[message.sender] = message.signature

    def _on_unmask_shares(self, message: UnmaskShares) -> None:
        sender = message.sender
        holds = self._holders(sender)
        survivors, dropped = frozenset(self._u3), self._u2 - self._u3
        seed_owners = {v for v, _ in message.self_mask_shares}
        key_owners = {v for v, _ in message.mask_key_shares}
        if not seed_owners <= (survivors & holds) or not key_owners <= (dropped & holds):
            raise self._violation("shares for clients outside the request", sender)
        seed_shares = [(owner, Share.from_bytes(blob)) for owner, blob in message.self_mask_shares]
        key_shares = [(owner, Share.from_bytes(blob)) for owner, blob in message.mask_key_shares]
        if any(share.x != sender + 1 for _, share in seed_shares + key_shares):
            raise self._violation("a share at another client's evaluation point", sender)
        for owner, share in seed_shares:
            self._seed_shares.setdefault(owner, {})[sender] = share
        for owner, share in key_shares:
            self._key_shares.setdefault(owner, {})[sender] = share
        self._responders.add(sender)

    # ------------------------------------------------------------------ stage ends
    def _end_advertise(self) -> dict[int, Message]:
        u1 = frozenset(self._adverts)
        self._check_recoverable(u1, u1, "advertising keys")
        out: dict[int, Message] = {}
        everyone = tuple(self._adverts[v] for v in sorted(u1))
        if self.config.verify_survivors:  # what every client binds into its signed statements (client.py)
            self._directory_digest = keyschedule.directory_digest([a.to_bytes() for a in everyone])
        for u in sorted(u1):
            # the malicious-server mode shows every advert to everyone (the digest pins the instance)
            adverts = everyone if self.config.verify_survivors else tuple(self._adverts[v] for v in sorted(self._holders(u) & u1))
            out[u] = KeyDirectory(self.round_id, u, adverts)
        self._u1 = u1
        self._stage = Stage.SHARE_KEYS
        return out

    def _end_share_keys(self) -> dict[int, Message]:
        u2 = frozenset(self._ciphertexts)
        self._check_recoverable(u2, u2, "sharing keys")
        inbox: dict[int, list[tuple[int, bytes]]] = {u: [] for u in u2}
        for v in sorted(u2):
            for recipient, blob in self._ciphertexts[v].ciphertexts:
                if recipient in inbox:
                    inbox[recipient].append((v, blob))
        out: dict[int, Message] = {u: ShareBundle(self.round_id, u, tuple(inbox[u])) for u in sorted(u2)}
        self._u2 = u2
        self._ciphertexts = {}
        self._stage = Stage.MASKED_INPUT
        return out

    def _end_masked_input(self) -> dict[int, Message]:
        sizes = {g: sum(1 for label in self._labels.values() if label == g) for g in self._groups}
        ranked = sorted(sizes.values(), reverse=True)
        if len(ranked) > 1 and ranked[0] == ranked[1]:
            raise self._abort(f"the masked inputs carry {len(ranked)} layouts, none by more clients than another")
        if sizes:
            chosen = max(sizes, key=lambda g: sizes[g])
            self._accumulator, self._groups = self._groups[chosen], {}
            self._dimension = self._accumulator.shape[0]
            self._excluded = frozenset(u for u, label in self._labels.items() if label != chosen)
            for u in self._excluded:  # set aside: dropped after masking
                self._u3.discard(u)
                self._commitments.pop(u, None)
                self._attestations.pop(u, None)
            self._labels = {}
        u3 = frozenset(self._u3)
        self._check_recoverable(self._u2, u3, "masked inputs")
        survivors = tuple(sorted(u3))
        if self.config.verify_survivors:
            self._stage = Stage.CONSISTENCY_CHECK
            return {u: SurvivorList(self.round_id, u, survivors) for u in survivors}
        self._u4 = u3
        self._stage = Stage.UNMASK
        return self._unmask_requests(())

    def _end_consistency(self) -> dict[int, Message]:
        u4 = frozenset(self._signatures)
        self._check_recoverable(self._u2, u4, "the consistency check")
        quorum = self.config.consistency_quorum
        if len(u4) < quorum:
            raise self._abort(f"{len(u4)} clients signed the survivor set, the consistency quorum is {quorum}")
        signatures = tuple(sorted(self._signatures.items()))
        self._u4 = u4
        self._stage = Stage.UNMASK
        return self._unmask_requests(signatures)

    def _quorum_signatures(self, recipient: int, signatures: tuple[tuple[int, bytes], ...]) -> tuple[tuple[int, bytes], ...]:
        """The consistency signatures forwarded to ``recipient``: a quorum, not every one.

        A client unmasks on ``q`` valid signatures on its ``U3`` and verifies every signature
        it is sent, so forwarding exactly ``q`` saves each client ``|U4| - q`` Ed25519
        verifications (and the bytes) without changing what it checks. Its own signature
        tells the recipient nothing, so the lowest ``q`` other signers are sent; its own only
        when ``U4`` is exactly a quorum. ``signatures`` is sorted by signer and has at least
        ``q`` entries (``_end_consistency`` checked); the result is sorted too.
        """
        quorum = self.config.consistency_quorum
        others = tuple(entry for entry in signatures[: quorum + 1] if entry[0] != recipient)
        return others[:quorum] if len(others) >= quorum else signatures[:quorum]

    def _unmask_requests(self, signatures: tuple[tuple[int, bytes], ...]) -> dict[int, Message]:
        # every holder gets the whole survivor set: it checks that each survivor whose
        # self-mask share it reveals keeps t share holders among the survivors
        survivors = tuple(sorted(self._u3))
        dropped_all = self._u2 - self._u3
        out: dict[int, Message] = {}
        for u in sorted(self._u4):
            holders = self._holders(u)
            dropped = tuple(sorted(dropped_all if self.config.complete_graph else holders & dropped_all))
            attestations = tuple((p, *self._attestations[p]) for p in sorted((holders - {u}) & self._u3) if p in self._attestations)
            forwarded = self._quorum_signatures(u, signatures) if signatures else ()
            out[u] = UnmaskRequest(self.round_id, u, survivors, dropped, forwarded, attestations)
        return out

    def _end_unmask(self) -> dict[int, Message]:
        t = self.config.threshold
        survivors = sorted(self._u3)
        dropped = sorted(self._u2 - self._u3)
        seeds = []
        for u in survivors:
            shares = self._seed_shares.get(u, {})
            if len(shares) < t:
                raise self._abort(f"{len(shares)} self-mask shares of client {u}, threshold is {t}")
            commitment = self._commitments[u]

            def matches_commitment(secret: Secret, u: int = u, commitment: bytes = commitment) -> bool:
                mine = keyschedule.self_mask_commitment(secret, round_id=self.round_id, client=u, context=self._context)
                return hmac.compare_digest(mine, commitment)

            seeds.append((self._combine(shares, u, matches_commitment, "its commitment"), -1))
        for v in dropped:
            shares = self._key_shares.get(v, {})
            if len(shares) < t:
                raise self._abort(f"{len(shares)} mask-key shares of client {v}, threshold is {t}")
            advertised = self._adverts[v].mask_public_key

            def matches_public_key(secret: Secret, advertised: bytes = advertised) -> bool:
                return x25519_secret_matches(secret, advertised)  # one value passes: the clamped key

            secret = self._combine(shares, v, matches_public_key, "its advertised key")
            mask_keys = X25519KeyPair.from_private_bytes(secret.reveal())
            for u in sorted(self.config.neighbourhood(v, self.round_id) & self._u3):
                shared = mask_keys.exchange(self._adverts[u].mask_public_key)
                seed = keyschedule.pairwise_seed(shared, round_id=self.round_id, a=u, b=v, context=self._context)
                seeds.append((seed, -keyschedule.mask_sign(u, v)))
        if self._accumulator is None:
            total = np.zeros(self._dimension or 0, dtype=self.config.codec.ring_dtype)
        else:
            total = self._accumulator
        mask_accumulate(total, seeds)
        total.flags.writeable = False
        self._result = AggregationResult(total, tuple(survivors), tuple(sorted(self._refused)))
        self._accumulator = None
        self._seed_shares, self._key_shares = {}, {}
        self._attestations = {}
        self._stage = Stage.DONE
        return {}

    def _combine(self, shares: dict[int, Share], owner: int, check: Callable[[Secret], bool], against: str) -> Secret:
        """Rebuild a secret from ``t`` shares and verify it (commitment or public key).

        ``t`` shares always interpolate to *some* value; the check says whether it is the
        client's secret. The first ``t`` shares of holders not yet refused are tried first
        (the honest case). If they fail, some holder sent a wrong share (attacker review 5:
        one bad share used to abort the round): :func:`~fedcrypt.crypto.shamir_decode` finds
        the secret that passes the check and exactly the shares that lie off its polynomial,
        whenever at most ``floor((N - t) / 2)`` of the ``N`` shares are wrong (Gao's decoder;
        one wrong share needs ``N >= t + 2``), and one more when ``N - t`` is odd if a search
        of 1,024 ``t``-subsets meets a clean one. Their holders are refused (:attr:`refused`),
        and the round goes on. Both checks accept one value only (a hash commitment, the
        clamped key), so within that bound blame is sound; beyond it colluding holders can get
        a correct share blamed (see ``shamir_decode``). Never a wrong secret: whatever is
        returned passed the check. Otherwise InvalidShare.
        """
        t = self.config.threshold
        trusted = [share for holder, share in sorted(shares.items()) if holder not in self._refused]
        secret: Secret | None = None
        if len(trusted) >= t:
            try:
                secret = shamir_combine(trusted[:t], t)
            except InvalidShare:  # the value does not even fit 32 bytes
                secret = None
        if secret is not None and check(secret):
            return secret
        try:
            secret, wrong = shamir_decode([share for _, share in sorted(shares.items())], t, check)
        except InvalidShare:
            try:
                shamir_combine([share for _, share in sorted(shares.items())], t)
            except InvalidShare:
                raise InvalidShare(f"the shares of client {owner} are inconsistent") from None
            raise InvalidShare(f"the secret reconstructed for client {owner} does not match {against}") from None
        for holder in sorted(shares):
            if shares[holder].x in wrong:
                self._refused.setdefault(holder, InvalidShare(f"client {holder} sent a wrong share of client {owner}'s secret (refused)"))
        return secret


_HANDLERS: dict[type, Callable[[ServerProtocol, Any], None]] = {  # message type -> handler (self, message)
    AdvertiseKeys: ServerProtocol._on_advertise,
    EncryptedShares: ServerProtocol._on_encrypted_shares,
    MaskedInput: ServerProtocol._on_masked_input,
    ConsistencySignature: ServerProtocol._on_signature,
    UnmaskShares: ServerProtocol._on_unmask_shares,
}
_ENDERS = {
    Stage.ADVERTISE_KEYS: ServerProtocol._end_advertise,
    Stage.SHARE_KEYS: ServerProtocol._end_share_keys,
    Stage.MASKED_INPUT: ServerProtocol._end_masked_input,
    Stage.CONSISTENCY_CHECK: ServerProtocol._end_consistency,
    Stage.UNMASK: ServerProtocol._end_unmask,
}
