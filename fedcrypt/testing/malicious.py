"""A malicious SecAgg server as a reusable test double, and the attacks fedcrypt is tested against.

:class:`MaliciousServer` runs the honest :class:`~fedcrypt.secagg.ServerProtocol` for the
parts of a round it does not attack, and lets a subclass rewrite, repeat, withhold or
forge every request it sends (:meth:`MaliciousServer.tamper`) and read every reply
(:meth:`MaliciousServer.observe`). It talks to the clients only through a
:class:`~fedcrypt.testing.transport.ClientEndpoints`, so the same attacks run against the
in-process clients, a Flower ``ClientApp`` with ``secagg_mod``, or your own transport.

It keeps everything a real attacker would keep: every share any client revealed (by owner
and kind), every masked input, every directory it showed. :class:`AttackReport` then says
what the attack achieved, from the attacker's side:

* ``leaked``: clients for which the server holds ``t`` self-mask shares *and* ``t``
  mask-key shares of one round (both secrets of one client: its input is exposed);
* ``recovered``: clients whose exact input vector the server computed (checked against
  the test's known inputs);
* ``refusals``: the typed errors the clients raised (client id, stage, error type).

Invariants (what :func:`run_attack` results are checked against in fedcrypt's tests):

* an attack inside the threat model ends with no ``leaked`` and no ``recovered`` client,
  and every client it targeted refused with a :class:`~fedcrypt.errors.FedcryptError`;
* a client error that is *not* a ``FedcryptError`` is never swallowed: it propagates.

The attacks in :data:`ATTACKS` follow Bonawitz et al. (CCS 2017) Sec. 4 and 6 (asking for
both shares of one client, inconsistent survivor views, key substitution) and the
model-inconsistency attack of Pasquini et al. (CCS 2022).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from fedcrypt.crypto import (
    SHARE_BYTES,
    Share,
    X25519KeyPair,
    aead_decrypt,
    aead_encrypt,
    mask_accumulate,
    shamir_combine,
)
from fedcrypt.errors import CryptoError, FedcryptError, InvalidShare, RoundAbortedError
from fedcrypt.secagg import (
    AdvertiseKeys,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    ServerProtocol,
    ShareBundle,
    Stage,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode_message,
    keyschedule,
)
from fedcrypt.secagg.messages import SHARE_PLAINTEXT_BYTES

from .transport import ClientEndpoints

__all__ = [
    "Refusal",
    "AttackReport",
    "MaliciousServer",
    "BothSharesDirect",
    "BothSharesSplit",
    "SplitSurvivorViews",
    "WithholdVictimShares",
    "ReplayPreviousRound",
    "KeySwapMitm",
    "InconsistentModels",
    "ATTACKS",
    "run_attack",
]


@dataclass(frozen=True)
class Refusal:
    """A client refused a request: who, at which stage, with which typed error."""

    client: int
    stage: Stage
    error: str
    message: str = field(repr=False, default="")


@dataclass
class AttackReport:
    """What one attack achieved (see the module docstring)."""

    attack: str
    verify_survivors: bool
    refusals: list[Refusal] = field(default_factory=list)
    server_refusals: list[Refusal] = field(default_factory=list)
    aborted: str | None = None
    completed: bool = False
    sum_correct: bool | None = None
    leaked: tuple[int, ...] = ()
    recovered: tuple[int, ...] = ()

    @property
    def defeated(self) -> bool:
        """True when the server learned no individual input."""
        return not self.leaked and not self.recovered

    def refused_by(self) -> dict[int, set[str]]:
        """Error type names by client id."""
        out: dict[int, set[str]] = {}
        for refusal in self.refusals:
            out.setdefault(refusal.client, set()).add(refusal.error)
        return out

    def outcome(self) -> str:
        """One line: what happened."""
        if not self.defeated:
            what = f"input of client(s) {list(self.recovered or self.leaked)} exposed"
            return f"ATTACK SUCCEEDED: {what}"
        errors = sorted({r.error for r in self.refusals})
        parts = [f"clients refused ({', '.join(errors)})"] if errors else []
        server_errors = sorted({r.error for r in self.server_refusals})
        if server_errors:
            parts.append(f"the server object refused replies ({', '.join(server_errors)})")
        if self.aborted:
            parts.append("round aborted")
        elif self.completed:
            exact = {True: "exact", False: "WRONG", None: "not checked"}[self.sum_correct]
            parts.append(f"round completed, sum {exact}")
        return "; ".join(parts) or "no effect"


class MaliciousServer:
    """The honest server's logic with every request open to tampering (a test double).

    Subclass and override :meth:`tamper` and :meth:`observe`; call :meth:`run`.

    Threat model it plays: a server that controls the transport completely (it may send
    any bytes to any client, any number of times, in any order) but does not know the
    clients' private keys, and does not collude with clients unless the subclass says so.

    Args:
        endpoints: the clients of the round.
        drops: ``{stage: client ids}``: clients that go silent before that stage's message.
    """

    name = "honest server"

    def __init__(self, endpoints: ClientEndpoints, *, drops: dict[Stage, set[int]] | None = None) -> None:
        self.endpoints = endpoints
        self.config = endpoints.config
        self.round_id = endpoints.round_id
        self.drops = {stage: set(ids) for stage, ids in (drops or {}).items()}
        self.server = ServerProtocol(
            self.config,
            round_id=self.round_id,
            associated_data=endpoints.associated_data,
            dimension=int(endpoints.inputs[0].shape[0]) if endpoints.inputs is not None else None,
        )
        self.report = AttackReport(self.name, self.config.verify_survivors)
        #: every request sent, by stage and client
        self.sent: dict[Stage, dict[int, list[Message]]] = {}
        #: the last advert of each client
        self.adverts: dict[int, AdvertiseKeys] = {}
        #: the directory each client accepted (it answered it), by client
        self.directories: dict[int, dict[int, AdvertiseKeys]] = {}
        #: senders of the share bundle each client accepted
        self.bundles: dict[int, tuple[int, ...]] = {}
        #: masked inputs by sender
        self.masked: dict[int, np.ndarray] = {}
        #: harvested shares: owner -> holder -> Share
        self.seed_shares: dict[int, dict[int, Share]] = {}
        self.key_shares: dict[int, dict[int, Share]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(round={self.round_id}, n={self.config.num_clients})"

    # ------------------------------------------------------------------ hooks
    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        """The messages actually sent to ``client`` instead of the honest ``request``.

        ``request`` is ``None`` when the honest server has nothing for this client (it was
        dropped or refused). Default: the honest request, unchanged.
        """
        return [request] if request is not None else []

    def observe(self, stage: Stage, client: int, request: Message, reply: Message) -> None:
        """Record what the attacker learns from a reply (shares, masked inputs, views)."""
        if isinstance(request, KeyDirectory):
            self.directories[client] = {a.sender: a for a in request.adverts}
        if isinstance(request, ShareBundle):
            self.bundles[client] = tuple(v for v, _ in request.ciphertexts)
        if isinstance(reply, AdvertiseKeys):
            self.adverts[client] = reply
        elif isinstance(reply, MaskedInput):
            self.masked[client] = np.array(reply.vector, copy=True)
        elif isinstance(reply, UnmaskShares):
            for owner, blob in reply.self_mask_shares:
                self.seed_shares.setdefault(owner, {})[client] = Share.from_bytes(blob)
            for owner, blob in reply.mask_key_shares:
                self.key_shares.setdefault(owner, {})[client] = Share.from_bytes(blob)

    def extra_stage_work(self, stage: Stage) -> None:
        """Called after every stage, before the honest server ends it."""

    # ------------------------------------------------------------------ running
    def _stages(self) -> list[Stage]:
        stages = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT]
        if self.config.verify_survivors:
            stages.append(Stage.CONSISTENCY_CHECK)
        return stages + [Stage.UNMASK]

    def _send(self, stage: Stage, client: int, message: Message | None) -> Message | None:
        """Deliver one message (``None``: ask for the advert); the decoded reply or None if refused."""
        try:
            if message is None:
                data = self.endpoints.advertise(client)
            else:
                self.sent.setdefault(stage, {}).setdefault(client, []).append(message)
                data = self.endpoints.deliver(client, message.to_bytes())
        except FedcryptError as exc:
            self.report.refusals.append(Refusal(client, stage, type(exc).__name__, str(exc)))
            return None
        reply = decode_message(data)
        if message is not None:
            self.observe(stage, client, message, reply)
        else:
            assert isinstance(reply, AdvertiseKeys)  # a client's first message is its advert
            self.adverts[client] = reply
        return reply

    def run(self) -> AttackReport:
        """Run the round with the attack; return the report."""
        n = self.config.num_clients
        gone: set[int] = set()
        requests: dict[int, Message] = {}
        for stage in self._stages():
            gone |= self.drops.get(stage, set())
            answered: set[int] = set()
            for client in range(n):
                if client in gone:
                    continue
                if stage is Stage.ADVERTISE_KEYS:
                    outgoing: list[Message | None] = [None]
                else:
                    outgoing = list(self.tamper(stage, client, requests.get(client)))
                for message in outgoing:
                    reply = self._send(stage, client, message)
                    if reply is None or client in answered:
                        continue
                    try:
                        self.server.receive(reply)
                        answered.add(client)
                    except FedcryptError as exc:
                        self.report.server_refusals.append(Refusal(client, stage, type(exc).__name__, str(exc)))
            self.extra_stage_work(stage)
            try:
                requests = self.server.end_stage()
            except (RoundAbortedError, InvalidShare) as exc:
                self.report.aborted = f"{type(exc).__name__}: {exc}"
                break
        else:
            result = self.server.result
            self.report.completed = True
            if self.endpoints.inputs is not None:
                expected = np.zeros_like(self.endpoints.inputs[0])
                for client in result.survivors:
                    expected += self.endpoints.inputs[client]
                self.report.sum_correct = bool(np.array_equal(result.ring_sum, expected))
        self._conclude()
        return self.report

    # ------------------------------------------------------------------ what leaked
    def _conclude(self) -> None:
        t = self.config.threshold
        leaked = sorted(
            owner for owner in set(self.seed_shares) & set(self.key_shares) if len(self.seed_shares[owner]) >= t and len(self.key_shares[owner]) >= t
        )
        self.report.leaked = tuple(leaked)
        recovered = []
        for owner, vector in self.recover().items():
            if self.endpoints.inputs is None or np.array_equal(vector, self.endpoints.inputs[owner]):
                recovered.append(owner)  # (unknown inputs: a full unmasking counts as recovered)
        self.report.recovered = tuple(sorted(recovered))

    def recover(self) -> dict[int, np.ndarray]:
        """Try to compute individual inputs from what was harvested (both secrets of a client)."""
        out = {}
        t = self.config.threshold
        for owner in self.report.leaked:
            if owner not in self.masked or owner not in self.directories:
                continue
            try:
                seed = shamir_combine(list(self.seed_shares[owner].values())[:t], t)
                secret = shamir_combine(list(self.key_shares[owner].values())[:t], t)
                mask_keys = X25519KeyPair.from_private_bytes(secret.reveal())
            except (InvalidShare, ValueError):
                continue
            masks = [(seed, -1)]
            for peer in self.bundles.get(owner, ()):
                shared = mask_keys.exchange(self.directories[owner][peer].mask_public_key)
                pairwise = keyschedule.pairwise_seed(shared, round_id=self.round_id, a=owner, b=peer, context=self.adverts[owner].context)
                masks.append((pairwise, -keyschedule.mask_sign(owner, peer)))
            vector = self.masked[owner].copy()
            mask_accumulate(vector, masks)
            out[owner] = vector
        return out


# ================================================================================ attacks
def _ids(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


class BothSharesDirect(MaliciousServer):
    """Ask every client, in one unmask request, for both shares of a victim that sent its input.

    Bonawitz et al. Sec. 4: an honest client reveals per peer either the self-mask share
    or the mask-key share, never both. Expected: every client refuses
    (:class:`~fedcrypt.errors.ProtocolViolationError`).
    """

    name = "both shares of one client, one request"

    def __init__(self, endpoints: ClientEndpoints, victim: int = 0, **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.victim = victim

    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        if stage is Stage.UNMASK and isinstance(request, UnmaskRequest):
            return [
                UnmaskRequest(
                    request.round_id,
                    request.recipient,
                    _ids(request.survivors + (self.victim,)),
                    _ids(request.dropped + (self.victim,)),
                    request.signatures,
                    request.attestations,
                )
            ]
        return super().tamper(stage, client, request)


class BothSharesSplit(MaliciousServer):
    """Ask for the victim's self-mask share, then in a second request for its mask-key share.

    Expected: the second request is refused (:class:`~fedcrypt.errors.UnexpectedMessageError`:
    a client answers the unmask stage once and forgets its shares).
    """

    name = "both shares of one client, two requests"

    def __init__(self, endpoints: ClientEndpoints, victim: int = 0, **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.victim = victim

    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        if stage is Stage.UNMASK and isinstance(request, UnmaskRequest) and self.victim in request.survivors:
            second = UnmaskRequest(
                request.round_id,
                request.recipient,
                tuple(v for v in request.survivors if v != self.victim),
                _ids(request.dropped + (self.victim,)),
                request.signatures,
                tuple(a for a in request.attestations if a[0] != self.victim),
            )
            return [request, second]
        return super().tamper(stage, client, request)


class SplitSurvivorViews(MaliciousServer):
    """Tell some clients that the victim survived and others that it dropped.

    The server collects self-mask shares of the victim from the first group and mask-key
    shares from the second. With ``2 t > m`` (enforced by
    :class:`~fedcrypt.secagg.SecAggConfig`) no split gives ``t`` of each; with
    ``verify_survivors`` the clients also refuse to unmask a survivor set that ``t`` others
    did not sign (Bonawitz et al. Sec. 4, round 3). ``colluders`` are clients that hand
    the server their own shares of the victim (both kinds) directly: the bound then
    becomes ``2 t > m + c`` (SECURITY.md).
    """

    name = "different survivor sets to different clients"

    def __init__(self, endpoints: ClientEndpoints, victim: int = 0, colluders: Iterable[int] = (), **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.victim = victim
        self.colluders = set(colluders)
        holders = sorted(self.config.holders(victim, self.round_id) - {victim} - self.colluders)
        # as many "dropped" views as the threshold needs (the colluders add theirs), the
        # rest see the victim alive
        self.told_dropped = set(holders[: max(0, self.config.threshold - len(self.colluders))])

    def _view(self, client: int, survivors: tuple[int, ...]) -> tuple[int, ...]:
        if client in self.told_dropped:
            return tuple(v for v in survivors if v != self.victim)
        return survivors

    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        if isinstance(request, SurvivorList):
            return [SurvivorList(request.round_id, request.recipient, self._view(client, request.survivors))]
        if isinstance(request, UnmaskRequest) and client in self.told_dropped and self.victim in request.survivors:
            return [
                UnmaskRequest(
                    request.round_id,
                    request.recipient,
                    self._view(client, request.survivors),
                    _ids(request.dropped + (self.victim,)),
                    request.signatures,
                    tuple(a for a in request.attestations if a[0] != self.victim),
                )
            ]
        return super().tamper(stage, client, request)

    def extra_stage_work(self, stage: Stage) -> None:
        if stage is not Stage.MASKED_INPUT:
            return
        # colluding clients hand over both of their shares of the victim (the secagg
        # engineer's ClientProtocol keeps them in ``_shares``; a corrupt client just reads them)
        clients = getattr(self.endpoints, "clients", None)
        for colluder in self.colluders:
            if clients is None:
                break
            shares = getattr(clients[colluder], "_shares", {}).get(self.victim)
            if shares:
                self.seed_shares.setdefault(self.victim, {})[colluder] = shares[0]
                self.key_shares.setdefault(self.victim, {})[colluder] = shares[1]


class WithholdVictimShares(MaliciousServer):
    """Drop the victim's encrypted key shares from everyone's share bundle while keeping it "alive".

    The other clients then hold none of the victim's shares and leave it out of their
    pairwise masks, while the server still lists it as a survivor. Expected: their masked
    inputs name the victim as skipped, which the (honest) server object refuses, and the
    round aborts; a server that forwarded them anyway meets clients that refuse the unmask
    request (:class:`~fedcrypt.errors.ProtocolViolationError`: it names a neighbour that
    never shared keys with them).
    """

    name = "withhold a victim's key shares, claim it survived"

    def __init__(self, endpoints: ClientEndpoints, victim: int = 0, **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.victim = victim

    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        if isinstance(request, ShareBundle) and client != self.victim:
            kept = tuple((v, blob) for v, blob in request.ciphertexts if v != self.victim)
            return [ShareBundle(request.round_id, request.recipient, kept)]
        return super().tamper(stage, client, request)


class ReplayPreviousRound(MaliciousServer):
    """Replay, before every honest request, the same client's request of an earlier round.

    Each old request is sent as recorded and also relabelled with the current round
    number. Expected: all of them refused (:class:`~fedcrypt.errors.UnexpectedMessageError`
    for the old round number; :class:`~fedcrypt.errors.ProtocolViolationError` or
    :class:`~fedcrypt.errors.DecryptionError` for the relabelled ones, whose keys, contexts
    and AEAD associated data belong to the old round), and then the round completes with
    the exact sum: a refused message changed nothing. A same-round duplicate of each
    request is sent after the honest one and refused too.
    """

    name = "replay of a previous round's messages"

    def __init__(self, endpoints: ClientEndpoints, previous: MaliciousServer, **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.previous = previous
        self.replays_sent = 0

    @staticmethod
    def _relabel(message: Message, round_id: int) -> Message | None:
        if isinstance(message, KeyDirectory):
            adverts = tuple(
                AdvertiseKeys(round_id, a.sender, a.cipher_public_key, a.mask_public_key, a.context, a.signature) for a in message.adverts
            )
            return KeyDirectory(round_id, message.recipient, adverts)
        if isinstance(message, ShareBundle):
            return ShareBundle(round_id, message.recipient, message.ciphertexts)
        if isinstance(message, SurvivorList):
            return None  # content is only ids: relabelled it is an honest request
        if isinstance(message, UnmaskRequest):
            if not message.signatures:
                return None
            return UnmaskRequest(round_id, message.recipient, message.survivors, message.dropped, message.signatures, message.attestations)
        return None

    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        old = self.previous.sent.get(stage, {}).get(client, [])
        out: list[Message] = []
        for message in old[:1]:
            out.append(message)
            relabelled = self._relabel(message, self.round_id)
            if relabelled is not None:
                out.append(relabelled)
        self.replays_sent += len(out)
        if request is not None:
            out.append(request)
            out.append(request)  # same-round duplicate, after the honest one
            self.replays_sent += 1
        return out


class KeySwapMitm(MaliciousServer):
    """Man in the middle: show the victim server-made public keys in place of its peers' keys.

    The victim then encrypts every share of its two secrets to keys the server holds and
    masks its input with pairwise keys the server can compute, so the server recovers the
    victim's input exactly *unless the keys are authenticated*. With ``verify_survivors``
    every advert carries an Ed25519 signature checked against the client's PKI, and the
    victim refuses the directory (:class:`~fedcrypt.errors.InvalidSignature`).
    Without it, this is outside the threat model (SECURITY.md: the honest-but-curious
    mode trusts the server to relay keys faithfully).
    """

    name = "swap a client's public keys (man in the middle)"

    def __init__(self, endpoints: ClientEndpoints, victim: int = 0, **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.victim = victim
        self.fake_cipher: dict[int, X25519KeyPair] = {}
        self.fake_mask: dict[int, X25519KeyPair] = {}
        self.stolen_seed: dict[int, Share] = {}
        self.stolen_key: dict[int, Share] = {}

    def _share_key(self, peer: int):
        victim_advert = self.adverts[self.victim]
        shared = self.fake_cipher[peer].exchange(victim_advert.cipher_public_key)
        return keyschedule.share_key(shared, round_id=self.round_id, a=self.victim, b=peer, context=victim_advert.context)

    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        if client != self.victim or request is None:
            return super().tamper(stage, client, request)
        if isinstance(request, KeyDirectory):
            adverts = []
            for advert in request.adverts:
                if advert.sender == self.victim:
                    adverts.append(advert)
                    continue
                self.fake_cipher[advert.sender] = X25519KeyPair.generate()
                self.fake_mask[advert.sender] = X25519KeyPair.generate()
                adverts.append(
                    AdvertiseKeys(
                        advert.round_id,
                        advert.sender,
                        self.fake_cipher[advert.sender].public_bytes,
                        self.fake_mask[advert.sender].public_bytes,
                        advert.context,
                        advert.signature,  # the real peer's signature, over other keys
                    )
                )
            return [KeyDirectory(request.round_id, request.recipient, tuple(adverts))]
        if isinstance(request, ShareBundle) and self.fake_cipher:
            # forge shares "from" every fake peer, encrypted to the victim under the fake keys
            ciphertexts = []
            for peer in sorted(self.fake_cipher):
                fake = Share(self.victim + 1, 1 + peer).to_bytes()
                plaintext = peer.to_bytes(4, "big") + self.victim.to_bytes(4, "big") + fake + fake
                ad = keyschedule.share_associated_data(
                    round_id=self.round_id, sender=peer, recipient=self.victim, context=self.adverts[self.victim].context
                )
                ciphertexts.append((peer, aead_encrypt(self._share_key(peer), plaintext, ad)))
            return [ShareBundle(request.round_id, request.recipient, tuple(ciphertexts))]
        return super().tamper(stage, client, request)

    def observe(self, stage: Stage, client: int, request: Message, reply: Message) -> None:
        super().observe(stage, client, request, reply)
        if client != self.victim or not self.fake_cipher or stage is not Stage.SHARE_KEYS:
            return
        assert isinstance(reply, EncryptedShares)  # the answer to a key directory
        for peer, blob in reply.ciphertexts:
            ad = keyschedule.share_associated_data(
                round_id=self.round_id, sender=self.victim, recipient=peer, context=self.adverts[self.victim].context
            )
            try:
                plaintext = aead_decrypt(self._share_key(peer), blob, ad)
            except CryptoError:
                continue
            if len(plaintext) == SHARE_PLAINTEXT_BYTES:
                self.stolen_seed[peer] = Share.from_bytes(plaintext[8 : 8 + SHARE_BYTES])
                self.stolen_key[peer] = Share.from_bytes(plaintext[8 + SHARE_BYTES :])

    def _conclude(self) -> None:
        t = self.config.threshold
        if len(self.stolen_seed) >= t:
            self.seed_shares[self.victim] = dict(self.stolen_seed)
            self.key_shares[self.victim] = dict(self.stolen_key)
        super()._conclude()

    def recover(self) -> dict[int, np.ndarray]:
        t = self.config.threshold
        if self.victim not in self.masked or len(self.stolen_seed) < t:
            return {}
        seed = shamir_combine(list(self.stolen_seed.values())[:t], t)
        victim_advert = self.adverts[self.victim]
        masks = [(seed, -1)]
        for peer in self.bundles.get(self.victim, ()):
            shared = self.fake_mask[peer].exchange(victim_advert.mask_public_key)
            pairwise = keyschedule.pairwise_seed(shared, round_id=self.round_id, a=self.victim, b=peer, context=victim_advert.context)
            masks.append((pairwise, -keyschedule.mask_sign(self.victim, peer)))
        vector = self.masked[self.victim].copy()
        mask_accumulate(vector, masks)
        return {self.victim: vector}


class InconsistentModels(MaliciousServer):
    """Run one round over clients that were handed different global models.

    Clients bind the global model into the round through ``associated_data`` (e.g.
    :func:`fedcrypt.integrations.peft.round_binding`); the endpoints must be built with a
    per-client associated data. The server forwards every advert, whatever its context, in
    every directory. Expected: clients refuse the directory
    (:class:`~fedcrypt.errors.ProtocolViolationError`: a peer in another round context),
    so no update computed on a model the server chose for one client is ever summed.
    """

    name = "different global models to different clients"

    def tamper(self, stage: Stage, client: int, request: Message | None) -> list[Message]:
        if stage is Stage.SHARE_KEYS and client in self.adverts:
            holders = self.config.holders(client, self.round_id)
            adverts = tuple(self.adverts[v] for v in sorted(holders & set(self.adverts)))
            return [KeyDirectory(self.round_id, client, adverts)]
        return super().tamper(stage, client, request)


#: name -> factory(endpoints) of every attack that needs only a fresh round
ATTACKS: dict[str, Callable[..., MaliciousServer]] = {
    "both-shares-direct": BothSharesDirect,
    "both-shares-split": BothSharesSplit,
    "split-survivor-views": SplitSurvivorViews,
    "withhold-victim-shares": WithholdVictimShares,
    "key-swap-mitm": KeySwapMitm,
}


def run_attack(attack: type[MaliciousServer] | Callable[..., MaliciousServer], endpoints: ClientEndpoints, **kwargs) -> AttackReport:
    """Build the attack on ``endpoints`` and run it: ``attack(endpoints, **kwargs).run()``."""
    return attack(endpoints, **kwargs).run()
