"""Attacker review 9: a malicious server searches the key holders' DEAL of the single-key CKKS round (1633338).

1633338 changed the single-key CKKS round core (``fedcrypt.he.round``):

1. before a context is pinned the round's key is the one most nodes report (a tie aborts); in
   dealer mode, when more nodes are keyless than hold that key, the lowest keyless node deals a
   new one and the holders are refused;
2. with a roster a node that already HOLDS the key answers a ``DealRequest`` by sealing the key
   it holds to the peers named in the request, each advert signed by a roster member for the
   request's round (without a roster a holder still refuses: review break 3);
3. a decryptor whose result differs is refused and further candidates are asked.

The claim (:mod:`fedcrypt.he.round`, "Malicious server"): with a roster and no colluding roster
member the server never learns the key or a single upload.

The search (real signed messages, not random bytes). Real nodes of a roster federation
(:class:`he._round_harness.Federation`, five nodes, ``key_setup="dealer"``): round 1 runs
honestly among nodes 100..102 (100 deals, 101 and 102 install); in round 2 nodes 103 and 104
advertise (the honest server would ask holder 100 to deal them the key; it is stopped there);
in round 3 node 104 and holder 101 answer a ``ContextRequest`` again. So node 103 waits with a
live X25519 key of round 2, node 104 with one of round 3, and the adverts of rounds 1 and 2 of
nodes 100..102 and 104 carry keys their nodes have thrown away. The server generates two X25519
key pairs ``S0, S1`` and a CKKS key ``K_S`` of its own. From these it builds:

* an **advert alphabet**: every real advert (round-1 adverts of today's holders, the round-2 and
  round-3 adverts of the late joiners, the holders' own signed context adverts); each keyed
  advert relabelled with another node id (every node and an outsider), another roster member
  and another round; each with its X25519 key replaced by the server's ``S0`` (signature kept,
  and unsigned); an outsider advert with ``S1`` for each round (unsigned, and with each real
  advert's signature of that round);
* **DealRequests**: every multiset of one or two adverts (``@slow``: every ordered pair and every
  multiset of three real or server-key adverts, plus two-field relabels) for every round id
  1..3, sent to each holder (100, 101, 102) and to each keyless node (103, 104);
* **the opening oracle**: every sealed blob of every ``DealReply`` obtained (and of the honest
  round-1 deal) is tried with ``open_key_from_peer`` under each of the server's X25519 private
  keys, every recipient id, every round id; any key that opens is a plan;
* **InstallRequests** forged to the two waiting nodes from real pieces: every deal statement
  obtained (dealer, member, X25519 key, fingerprint, peers, signature), each also with its
  X25519 key swapped for ``S0`` or its fingerprint for ``K_S``, and server-made statements
  (dealer 7/100/101, member named or not, ``S0``, ``K_S``, unsigned or with a real deal
  signature); peers as dealt, with the target's live advert added, or the target's advert alone;
  every sealed blob obtained plus ``K_S`` sealed by the server to the target's live key. The
  oracle: a node that installs ``K_S`` (a server-known key: every later upload of it is open
  to the server); an install of the group key is the intended late-join path; an install of
  another honest key is a split (reported, not a break);
* every refusal must be a :class:`~fedcrypt.errors.FedcryptError`; a holder's state bytes must
  be unchanged after every deal it makes (so neither its key nor its upload and decryption
  counters move: change 2 buys no second decryption).

**Result: no plan** against the real client: no sealed blob opens under a server key, no node
installs a server-known key. Default run: 101 adverts, 5,252 peer lists, 78,780 DealRequests, of
which 22 are dealt (7 per holder: exactly the correctly labelled real adverts of other members of
the request's round, dead keys included, and one fresh key by node 103 to 104's dead round-2
advert: an honest split), 1,080 openings, 12,555 InstallRequests of which 15 are installed, all
the group key (the late-join path); every refusal typed, every holder's state bytes unchanged.
``@slow``: 1,974,420 DealRequests (28 dealt), 21,285 InstallRequests (18 installed, all the group
key), no plan, about 5 minutes. The holder checks that stop the server: each advert's roster signature binds node, member,
X25519 key and round, so the only keys a holder seals to are X25519 keys honest nodes made
(a thrown-away one is as good as none to the server); the waiting node opens a key only under a
roster member's signed deal statement.

**Positive controls** (the same search, weakened clients):

* ``DealsToUnsignedAdverts``: a holder that does not verify its peers' advert signatures deals the
  group key to ``S0`` (the server's key with a real advert's labels); the oracle opens it and
  decrypts node 101's round-1 upload.
* ``DealsWithoutRoster``: a holder that deals without a roster (the check review break 3 put
  there removed) seals the group key to the server's unsigned outsider advert.
* ``InstallsUnsignedDeals``: a waiting node that does not verify the dealer's statement installs
  ``K_S`` sealed by the server.

**Availability (change 1), honest server, a network that only drops real messages.** A search
over drop plans (each round: nothing, or one node's request or reply lost at CONTEXT, DEAL or
INSTALL; depth 2 rounds, ``@slow`` 3) against the honest ``CkksServer`` with a roster, the
context carried from round to round the way the FLARE and Flower transports do
(``server.context or previous``, also after an abort), abstract states (each node's key state
and key, the pinned key) explored breadth first, each state then checked by two honest rounds.

* **Break (availability): two lost DEAL replies end every later round.** Round 1: the dealer's
  ``DealReply`` is lost (it holds key K1, nothing is pinned, the round aborts). Round 2: the
  keyless nodes outnumber the one holder, the lowest of them deals K2, and its ``DealReply`` is
  lost too. From round 3 on ``_end_context`` sees K1 and K2 reported by one node each: a tie,
  ``ContextMismatchError`` "none by more nodes than another", at every round, forever (the two
  dealers never drop their keys, nothing is ever pinned). The same tie comes from one lost
  DEAL reply and one site loading a key file of its own. FIXED after this review: the
  fresh-deal rule (more keyless nodes than holders of any unpinned key) is checked before the
  tie, so the keyless nodes are dealt a new key; the tests below now pass.
* Otherwise the nodes the search strands (refused in both honest rounds) are exactly the
  dealers whose ``DealReply`` was lost (documented). Depth 2: 17 abstract states, 355 rounds, one
  dead state (the plan above); ``@slow`` depth 3: 18 states, 485 rounds, the same dead state.
* Related: two colluding sites with key files of their own ended every round before a key
  was pinned (a tie); with the fix the keyless majority is dealt a new key (tested below). A
  tie still ends the round when no keyless majority exists.
"""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np
import pytest
from he._round_harness import MAX_WEIGHT, PARAMS, Federation

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import ContextMismatchError, FedcryptError, HonestButCuriousWarning
from fedcrypt.he import AggregatorContext, KeyOwner
from fedcrypt.he.keyshare import open_key_from_peer, seal_key_for_peer
from fedcrypt.he.round import (
    CkksClient,
    CkksServer,
    ContextReply,
    ContextRequest,
    DealReply,
    DealRequest,
    InstallRequest,
    KeyState,
    Stage,
)

NODES = (100, 101, 102, 103, 104)
HOLDERS = (100, 101, 102)
WAITING = {103: 2, 104: 3}  # node -> the round of its live X25519 key
OUTSIDER = 7
ROUNDS = (1, 2, 3)
MEMBERS = tuple(f"node-{i}" for i in range(len(NODES)))


# ============================================================================ weakened clients (controls)
class DealsToUnsignedAdverts(CkksClient):
    """Control: a holder that does not verify the signatures of the adverts it deals to."""

    __slots__ = ()

    def _verify(self, member: str, signature: bytes, statement: bytes, what: str) -> None:
        if what.startswith("the X25519 key of node"):
            return
        super()._verify(member, signature, statement, what)


class InstallsUnsignedDeals(CkksClient):
    """Control: a waiting node that does not verify the dealer's signed statement."""

    __slots__ = ()

    def _verify(self, member: str, signature: bytes, statement: bytes, what: str) -> None:
        if what == "the dealer's key transport":
            return
        super()._verify(member, signature, statement, what)


class DealsWithoutRoster(CkksClient):
    """Control: a holder that deals its key without a roster (review break 3's check removed)."""

    __slots__ = ()

    def _on_deal_request(self, message: DealRequest) -> DealReply:
        if self._owner is None or self.config.roster is not None:
            return super()._on_deal_request(message)
        if not message.peers:
            raise self._violation("a deal for no peer", message)
        self._check_peer_adverts(message, own=False)
        pair = X25519KeyPair.generate()
        sealed = tuple(
            (p.node, seal_key_for_peer(self._owner, sender=pair, sender_id=self.node, recipient_id=p.node,
                                       recipient_public=p.x25519, round_id=message.round_id))
            for p in message.peers
        )
        return DealReply(message.round_id, self.node, self._owner.aggregator_context().to_bytes(), pair.public_bytes, sealed)


# ============================================================================ the world
@dataclass
class World:
    fed: Federation
    group: bytes  # the group key's fingerprint
    adverts: list[tuple[str, ContextReply]]  # real signed adverts, labelled
    live: dict[int, ContextReply]  # waiting node -> its live advert
    deals: list[tuple[str, DealRequest, DealReply]]  # the honest deals seen
    upload: tuple[bytes, np.ndarray]  # node 101's round-1 upload and its plaintext w/M * [x, 1]
    pairs: tuple[X25519KeyPair, X25519KeyPair]  # the server's own X25519 keys S0, S1
    server_key: KeyOwner  # K_S
    base: dict[int, bytes] = field(default_factory=dict)  # every node's state bytes after the set-up

    @property
    def roster(self) -> bool:
        return self.fed.roster is not None

    def rebuild(self, node: int) -> CkksClient:
        client = self.fed.clients[node]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            self.fed.clients[node] = type(client).from_state_bytes(self.base[node], config=self.fed.config,
                                                                   identity=self.fed.identity(node))
        return self.fed.clients[node]


def build_world(*, roster: bool = True, holder_cls: type[CkksClient] = CkksClient,
                waiting_cls: type[CkksClient] = CkksClient) -> World:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        fed = Federation(len(NODES), roster=roster, key_setup="dealer")
        for node in NODES:
            cls = holder_cls if node in HOLDERS else waiting_cls
            fed.clients[node] = cls.from_state_bytes(fed.clients[node].to_state_bytes(), config=fed.config,
                                                     identity=fed.identity(node))
        _, log1 = fed.run(1, skip={Stage.CONTEXT: {103, 104}})
        assert fed.context is not None and all(fed.clients[n].key_state is KeyState.READY for n in HOLDERS)
        # round 2: 103 and 104 ask for the key (with a roster the honest server would have 100 deal it; stopped there)
        _, log2 = fed.run(2, until=Stage.DEAL)
        a3_104 = fed.clients[104].handle(ContextRequest(3, 104).to_bytes())
        c3_101 = fed.clients[101].handle(ContextRequest(3, 101).to_bytes())
    c1, c2 = log1.replies[Stage.CONTEXT], log2.replies[Stage.CONTEXT]
    adverts = [(f"A1.{n}", c1[n]) for n in HOLDERS] + [("A2.103", c2[103]), ("A2.104", c2[104]), ("A3.104", a3_104),
                                                       ("C2.100", c2[100]), ("C3.101", c3_101)]
    deal = ("honest round-1 deal", log1.requests[Stage.DEAL][100], log1.replies[Stage.DEAL][100])
    group = fed.clients[100].fingerprint
    assert group is not None and all(fed.clients[n].fingerprint == group for n in HOLDERS)
    assert fed.clients[103].key_state is KeyState.AWAITING_KEY and fed.clients[104].key_state is KeyState.AWAITING_KEY
    x, w = fed.inputs[101], fed.weights[101]
    plain = w / MAX_WEIGHT * np.append(x, 1.0)
    world = World(fed, group, adverts, {103: c2[103], 104: a3_104}, [deal], (log1.replies[Stage.ENCRYPT][101].blob, plain),
                  (X25519KeyPair.generate(), X25519KeyPair.generate()), KeyOwner.generate(PARAMS))
    world.base = {n: fed.clients[n].to_state_bytes() for n in NODES}
    return world


# ============================================================================ the alphabet
def advert_alphabet(world: World, *, wide: bool = False) -> list[tuple[str, ContextReply]]:
    """Real adverts, relabelled ones and adverts carrying the server's X25519 keys (see the module docstring)."""
    s0, s1 = (p.public_bytes for p in world.pairs)
    out = list(world.adverts)
    keyed = [(label, a) for label, a in world.adverts if a.x25519]
    members = MEMBERS if world.roster else ()
    for label, a in keyed:
        for node in (*NODES, OUTSIDER):
            if node != a.node:
                out.append((f"{label}[node={node}]", replace(a, node=node)))
        for member in members:
            if member != a.member:
                out.append((f"{label}[member={member}]", replace(a, member=member)))
        for r in ROUNDS:
            if r != a.round_id:
                out.append((f"{label}[round={r}]", replace(a, round_id=r)))
        out.append((f"{label}[x25519=S0]", replace(a, x25519=s0)))
        if world.roster:
            out.append((f"{label}[x25519=S0,unsigned]", replace(a, x25519=s0, signature=b"")))
        if wide:
            for node, member in itertools.product((*NODES, OUTSIDER), members):
                if node != a.node and member != a.member:
                    out.append((f"{label}[node={node},member={member}]", replace(a, node=node, member=member)))
            for r in ROUNDS:
                if r != a.round_id:
                    out.append((f"{label}[round={r},x25519=S0]", replace(a, round_id=r, x25519=s0)))
            for node in (*NODES, OUTSIDER):
                if node != a.node:
                    out.append((f"{label}[node={node},x25519=S0]", replace(a, node=node, x25519=s0)))
    for r in ROUNDS:
        out.append((f"S1@{r}", ContextReply(r, OUTSIDER, b"", s1)))
        if world.roster:
            for label, a in keyed:
                if a.round_id == r:
                    out.append((f"S1@{r}~sig({label})", ContextReply(r, OUTSIDER, b"", s1, a.member, a.signature)))
                    out.append((f"S1@{r}~as({label})", ContextReply(r, a.node, b"", s1, a.member, a.signature)))
    return out


def peer_lists(alphabet: list[tuple[str, ContextReply]], *, wide: bool = False) -> Iterable[tuple[tuple[str, ...], tuple[ContextReply, ...]]]:
    pick = itertools.product(alphabet, repeat=2) if wide else itertools.combinations_with_replacement(alphabet, 2)
    for size_one in alphabet:
        yield (size_one[0],), (size_one[1],)
    for combo in pick:
        yield tuple(c[0] for c in combo), tuple(c[1] for c in combo)
    if wide:  # triples of real and server-key adverts (no relabels)
        core = [a for a in alphabet if "[" not in a[0] or "x25519=S0]" in a[0]]
        for combo in itertools.combinations_with_replacement(core, 3):
            yield tuple(c[0] for c in combo), tuple(c[1] for c in combo)


# ============================================================================ the search
@dataclass
class Found:
    deal_requests: int = 0
    install_requests: int = 0
    open_attempts: int = 0
    accepted: list[tuple[str, int, DealRequest, DealReply]] = field(default_factory=list)
    refusals: Counter = field(default_factory=Counter)
    plans: list[str] = field(default_factory=list)  # the server opened a key / a node holds a server-known key
    installs: Counter = field(default_factory=Counter)  # accepted installs by what the node then holds
    splits: list[str] = field(default_factory=list)  # an honest node holds an honest key other than the group's
    untyped: list[str] = field(default_factory=list)
    state_checks: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.deal_requests} DealRequests ({len(self.accepted)} dealt), {self.install_requests} InstallRequests "
                f"({dict(self.installs)}), {self.open_attempts} openings tried, {len(self.plans)} plans, "
                f"{len(self.splits)} splits, {len(self.untyped)} untyped, {self.state_checks} state checks, {self.seconds:.1f} s")


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split()[:6])}"


def _send(found: Found, client: CkksClient, message: Any, what: str) -> Any:
    try:
        return client.handle(message.to_bytes())
    except FedcryptError as exc:
        found.refusals[_why(exc)] += 1
    except Exception as exc:  # noqa: BLE001 - an untyped refusal is a finding
        found.untyped.append(f"{what}: {type(exc).__name__}: {exc}")
    return None


def _open(world: World, found: Found, reply: DealReply, what: str) -> None:
    """The oracle: open every sealed blob with every X25519 private key the server holds."""
    for peer, blob in reply.sealed:
        for name, pair in zip(("S0", "S1"), world.pairs):
            for recipient, round_id in itertools.product(sorted({peer, OUTSIDER, *NODES}), ROUNDS):
                found.open_attempts += 1
                try:
                    owner = open_key_from_peer(blob, recipient=pair, recipient_id=recipient, sender_id=reply.node,
                                               sender_public=reply.x25519, round_id=round_id)
                except (FedcryptError, ValueError):
                    continue
                kind = "THE GROUP KEY" if owner.fingerprint == world.group else "a key"
                found.plans.append(f"{what}: the blob sealed to node {peer} opens under {name} (round {round_id}): {kind}")
                found.opened = owner  # type: ignore[attr-defined]


def deal_search(world: World, found: Found, lists: Iterable[tuple[tuple[str, ...], tuple[ContextReply, ...]]],
                *, first_plan: bool = False) -> None:
    """``first_plan``: stop at the first peer list that yields a plan (the controls, whose holders deal to almost anything)."""
    for what, _request, reply in world.deals:
        _open(world, found, reply, what)
    for labels, peers in lists:
        if first_plan and found.plans:
            return
        for round_id, node in itertools.product(ROUNDS, NODES):
            request = DealRequest(round_id, node, peers)
            found.deal_requests += 1
            what = f"DealRequest(round {round_id}) to {node} for {labels}"
            client = world.fed.clients[node]
            reply = _send(found, client, request, what)
            if reply is None:
                if found.deal_requests % 4001 == 0:  # a sample of refusals: nothing changed
                    found.state_checks += 1
                    assert client.to_state_bytes() == world.base[node], what
                continue
            found.accepted.append((what, node, request, reply))
            _open(world, found, reply, what)
            if node in HOLDERS:  # a holder's deal changes nothing: its key and its counters stay
                found.state_checks += 1
                assert client.to_state_bytes() == world.base[node], what
                assert AggregatorContext.from_bytes(reply.context).fingerprint == world.group, what
            else:  # a waiting node that deals makes a key of its own: an honest split, not a leak
                found.splits.append(f"{what}: node {node} now holds a fresh key of its own")
                world.rebuild(node)


def _statement_pieces(world: World, found: Found) -> tuple[list[tuple[str, tuple]], list[tuple[str, bytes]]]:
    """Deal statements (label, (dealer, member, x25519, fingerprint, peers, signature)) and sealed blobs, real and forged."""
    s0, ks = world.pairs[0].public_bytes, world.server_key.fingerprint
    real = [(what, req, rep) for what, req, rep in world.deals] + [(what, req, rep) for what, _, req, rep in found.accepted]
    statements: list[tuple[str, tuple]] = []
    blobs: list[tuple[str, bytes]] = []
    signatures = [b""]
    for what, request, reply in real:
        fp = AggregatorContext.from_bytes(reply.context).fingerprint
        st = (reply.node, reply.member, reply.x25519, fp, request.peers, reply.signature)
        statements += [(what, st), (f"{what} [x25519=S0]", (*st[:2], s0, *st[3:])), (f"{what} [fp=K_S]", (*st[:3], ks, *st[4:]))]
        blobs += [(f"{what} -> {peer}", blob) for peer, blob in reply.sealed]
        if reply.signature and reply.signature not in signatures and len(signatures) < 4:
            signatures.append(reply.signature)
    members = ("node-0", "") if world.roster else ("",)
    for dealer, member, sig in itertools.product((OUTSIDER, 100, 101), members, signatures):
        statements.append((f"server statement (dealer {dealer}, member {member!r}, sig {signatures.index(sig)})",
                           (dealer, member, s0, ks, None, sig)))
    return statements, blobs


def install_search(world: World, found: Found, *, all_blobs: bool = True) -> None:
    statements, blobs = _statement_pieces(world, found)
    s0 = world.pairs[0]
    for target, round_id in WAITING.items():
        live = world.live[target]
        client = world.fed.clients[target]
        own_blobs = {d: seal_key_for_peer(world.server_key, sender=s0, sender_id=d, recipient_id=target,
                                          recipient_public=live.x25519, round_id=round_id)
                     for d in (OUTSIDER, *NODES) if d != target}
        for label, (dealer, member, x25519, fp, peers, sig) in statements:
            if dealer == target:
                continue
            variants = [("alone", (live,))]
            if peers is not None:
                variants += [("as dealt", peers)]
                if all(p.node != target for p in peers):
                    variants.append(("plus target", (*peers, live)))
            candidates = [(f"K_S sealed by S0 as {dealer}", own_blobs[dealer])]
            candidates += blobs if all_blobs else [b for b in blobs if b[0].endswith(f"-> {target}")]
            for (pname, plist), (bname, blob) in itertools.product(variants, candidates):
                request = InstallRequest(round_id, target, dealer, member, x25519, fp, plist, blob, sig)
                found.install_requests += 1
                what = f"InstallRequest to {target}: {label}, peers {pname}, blob {bname}"
                if _send(found, client, request, what) is None:
                    continue
                held = client.fingerprint
                if held == world.server_key.fingerprint:
                    found.plans.append(f"{what}: node {target} holds the server's key K_S")
                    found.installs["K_S"] += 1
                elif held == world.group:
                    found.installs["group key"] += 1
                else:
                    found.installs["another honest key"] += 1
                    found.splits.append(f"{what}: node {target} holds another honest key")
                client = world.rebuild(target)


def search(world: World, *, wide: bool = False, installs: bool = True, first_plan: bool = False, singles: bool = False) -> Found:
    """``singles``: DealRequests for one peer only (the install control, which needs the deals, not the pairs)."""
    found = Found()
    start = time.perf_counter()
    lists = peer_lists(advert_alphabet(world, wide=wide), wide=wide)
    if singles:
        lists = ((labels, peers) for labels, peers in lists if len(peers) == 1)
    deal_search(world, found, lists, first_plan=first_plan)
    if installs:
        install_search(world, found, all_blobs=True)
    found.seconds = time.perf_counter() - start
    return found


# ============================================================================ tests: the real client
def test_holder_deal_search_finds_no_plan() -> None:
    world = build_world()
    alphabet = advert_alphabet(world)
    found = search(world)
    print(f"\nalphabet {len(alphabet)} adverts; {found.summary()}")
    assert not found.untyped, found.untyped[:5]
    assert not found.plans, found.plans[:5]
    # the enumeration is what it claims: 8 real adverts, 13 variants of each of the 6 keyed ones, 3 unsigned S1 adverts
    # and 2 S1 adverts per keyed one (its signature, its labels); their singles and unordered pairs; 3 rounds x 5 nodes
    assert len(alphabet) == 8 + 6 * 13 + 3 + 6 * 2 == 101
    assert found.deal_requests == (101 + 101 * 102 // 2) * len(ROUNDS) * len(NODES) == 78_780
    # what the holders deal is exactly the real, live-or-dead, correctly labelled adverts of other members:
    # 3 holders x (round 1: the other two holders' adverts, singly and together; round 2: 103 and 104; round 3: 104)
    holder_deals = Counter(node for _, node, _, _ in found.accepted if node in HOLDERS)
    assert holder_deals == {100: 7, 101: 7, 102: 7}, holder_deals
    assert {len(r.peers) for _, _, r, _ in found.accepted} == {1, 2}
    assert all(all(a in dict(world.adverts).values() for a in r.peers) for _, _, r, _ in found.accepted)
    # a waiting node deals a fresh key only in its own round, to the other waiting node's advert of that round
    assert [w.split(":")[0] for w in found.splits if "fresh key" in w] == ["DealRequest(round 2) to 103 for ('A2.104',)"]
    # installs: only the group key, from a holder's deal to the target's live advert
    assert set(found.installs) == {"group key"} and found.installs["group key"] >= 2, found.installs
    assert found.install_requests > 10_000 and found.open_attempts > 1_000


@pytest.mark.slow
def test_holder_deal_search_wide_finds_no_plan() -> None:
    world = build_world()
    found = search(world, wide=True)
    print(f"\n{found.summary()}")
    assert not found.untyped, found.untyped[:5]
    assert not found.plans, found.plans[:5]
    assert set(found.installs) == {"group key"}, found.installs


# ============================================================================ tests: positive controls
def _uses_the_key(world: World, owner: KeyOwner) -> None:
    blob, plain = world.upload
    assert owner.fingerprint == world.group
    np.testing.assert_allclose(owner.decrypt(blob), plain, atol=1e-3)  # node 101's own upload, alone


def test_control_a_holder_that_skips_advert_signatures_deals_the_key_to_the_server() -> None:
    world = build_world(holder_cls=DealsToUnsignedAdverts)
    found = search(world, installs=False, first_plan=True)
    print(f"\n{found.summary()}")
    assert found.plans and all("THE GROUP KEY" in p or "K_S" in p for p in found.plans), found.plans[:5]
    assert any("[x25519=S0]" in p and "opens under S0" in p for p in found.plans)
    _uses_the_key(world, found.opened)  # type: ignore[attr-defined]


def test_control_a_holder_that_deals_without_a_roster_deals_the_key_to_the_server() -> None:
    world = build_world(roster=False, holder_cls=DealsWithoutRoster)
    found = search(world, installs=False, first_plan=True)
    print(f"\n{found.summary()}")
    assert any("[x25519=S0]" in p and "opens under S0" in p and "THE GROUP KEY" in p for p in found.plans), found.plans[:5]
    _uses_the_key(world, found.opened)  # type: ignore[attr-defined]
    # the unweakened holders without a roster refuse every one of these requests (a keyless node without a roster
    # still deals a fresh key to whatever X25519 key the server relays: the documented honest-but-curious mode)
    plain = build_world(roster=False)
    again = Found()
    deal_search(plain, again, ((labels, peers) for labels, peers in peer_lists(advert_alphabet(plain)) if len(peers) == 1))
    assert not [a for a in again.accepted if a[1] in HOLDERS] and not [p for p in again.plans if "GROUP" in p], again.summary()
    assert again.plans and all(("to 103" in p or "to 104" in p) and ": a key" in p for p in again.plans), again.plans[:3]


def test_control_a_waiting_node_that_skips_the_dealer_signature_installs_the_servers_key() -> None:
    world = build_world(waiting_cls=InstallsUnsignedDeals)
    found = search(world, singles=True)
    print(f"\n{found.summary()}")
    assert found.installs["K_S"] > 0 and any("holds the server's key K_S" in p for p in found.plans)


# ============================================================================ change 3 on the node side
def test_asking_every_holder_to_decrypt_the_confirmed_set_gives_one_value() -> None:
    """A malicious server may ask more decryptors than ``decryptors`` (change 3 asks more when one differs): every
    holder's release of the confirmed set is bit-identical (deterministic flooding), and no node releases twice."""
    fed = Federation(4, roster=True)
    server, log = fed.run(1, until=Stage.DECRYPT)
    first = next(iter(log.requests[Stage.DECRYPT].values()))
    values = []
    for node in sorted(fed.clients):
        values.append(fed.clients[node].handle(replace(first, node=node).to_bytes()).values)
        with pytest.raises(FedcryptError, match="one per upload"):
            fed.clients[node].handle(replace(first, node=node).to_bytes())
    assert all(np.array_equal(values[0], v) for v in values[1:])


# ============================================================================ availability (change 1)
DROP_STAGES = (Stage.CONTEXT, Stage.DEAL, Stage.INSTALL)
Drop = tuple[Stage, int, str] | None


class Network:
    """Honest nodes and an honest server; the network may lose one request or one reply per round."""

    def __init__(self, n: int = 4) -> None:
        self.fed = Federation(n, roster=True, key_setup="dealer")
        self.nodes = sorted(self.fed.clients)
        self.context: bytes | None = None
        self.round_id = 0

    def snapshot(self) -> tuple[dict[int, bytes], bytes | None, int]:
        return {n: c.to_state_bytes() for n, c in self.fed.clients.items()}, self.context, self.round_id

    def restore(self, snap: tuple[dict[int, bytes], bytes | None, int]) -> None:
        states, self.context, self.round_id = snap
        for n, raw in states.items():
            self.fed.clients[n] = CkksClient.from_state_bytes(raw, config=self.fed.config, identity=self.fed.identity(n))

    def abstract(self) -> tuple:
        """Each node's key state and key (canonically numbered), and the pinned key."""
        names: dict[bytes, int] = {}
        pinned = AggregatorContext.from_bytes(self.context).fingerprint if self.context else None
        keys = [self.fed.clients[n].fingerprint for n in self.nodes] + [pinned]
        for fp in keys:
            if fp is not None:
                names.setdefault(fp, len(names))
        return tuple((self.fed.clients[n].key_state.name, names.get(self.fed.clients[n].fingerprint)) for n in self.nodes) + (
            names.get(pinned),)

    def round(self, drop: Drop = None) -> tuple[list[int] | None, dict[int, str]]:
        """One round up to ENCRYPT (the key set-up): the nodes asked to encrypt (None: aborted) and the refusals
        (the abort's reason under key 0)."""
        self.round_id += 1
        server = CkksServer(self.fed.config, self.nodes, round_id=self.round_id, context=self.context)
        requests = server.begin()
        holders = None
        try:
            while requests and server.stage is not Stage.ENCRYPT:
                stage = server.stage
                for node in sorted(requests):
                    if drop == (stage, node, "request"):
                        continue
                    try:
                        reply = self.fed.clients[node].handle(requests[node].to_bytes())
                    except FedcryptError:
                        continue
                    if drop == (stage, node, "reply"):
                        continue
                    try:
                        server.receive(reply.to_bytes(), sender=node)
                    except FedcryptError:
                        pass
                requests = server.end_stage()
            if server.stage is Stage.ENCRYPT:
                holders = sorted(requests)
        except FedcryptError:
            pass
        finally:
            self.context = server.context or self.context  # as the FLARE and Flower transports carry it
        refused = dict(server.report.refused)
        if server.report.aborted:
            refused[0] = server.report.aborted
        return holders, refused


def _options(nodes: list[int]) -> list[Drop]:
    return [None] + [(s, n, k) for s in DROP_STAGES for n in nodes for k in ("request", "reply")]


@functools.lru_cache(maxsize=None)
def availability_search(depth: int) -> dict[str, Any]:
    """Breadth-first over abstract states reached by ``depth`` lossy rounds; each state then gets two honest rounds."""
    net = Network()
    start = net.abstract()
    frontier = {start: (net.snapshot(), ())}
    seen = {start: ()}
    rounds = 0
    for _ in range(depth):
        nxt: dict[tuple, tuple] = {}
        for snap, plan in frontier.values():
            for drop in _options(net.nodes):
                net.restore(snap)
                net.round(drop)
                rounds += 1
                reached = net.abstract()
                if reached not in seen:
                    seen[reached] = plan + (drop,)
                    nxt[reached] = (net.snapshot(), plan + (drop,))
        frontier = nxt
    dead, stranded = {}, {}
    # re-derive a concrete representative for every state (replaying its plan) and check it with honest rounds
    for state, plan in seen.items():
        net = Network()
        for drop in plan:
            net.round(drop)
        assert net.abstract() == state
        first, refused1 = net.round()
        after = net.abstract()
        second, refused2 = net.round()
        rounds += len(plan) + 2
        lost_deals = [d[1] for d in plan if d is not None and d[0] is Stage.DEAL and d[2] == "reply"]
        if first is None and second is None:
            dead[state] = (plan, refused2, after == net.abstract())
        else:
            out = [n for n in net.nodes if (first is None or n not in first) and (second is None or n not in second)]
            if out:
                stranded[state] = (plan, out, lost_deals)
    return {"states": len(seen), "rounds": rounds, "dead": dead, "stranded": stranded}


def _plan_text(plan: tuple) -> str:
    return " ; ".join("honest" if d is None else f"{d[0].name} {d[2]} of {d[1]} lost" for d in plan)


def test_no_drop_plan_ends_every_later_round() -> None:
    # fixed: the fresh-deal rule comes before the tie (more keyless nodes than holders of any unpinned key)
    out = availability_search(2)
    assert not out["dead"], [_plan_text(p) for p, _, _ in out["dead"].values()]


def _two_lost_deals(net: Network) -> None:
    for _ in range(2):
        dealer = min(n for n in net.nodes if net.fed.clients[n].key_state is not KeyState.READY)
        holders, refused = net.round((Stage.DEAL, dealer, "reply"))
        assert holders is None and net.context is None


def test_rounds_complete_once_the_network_heals_after_two_lost_deal_replies() -> None:
    net = Network()
    _two_lost_deals(net)
    assert any(net.round()[0] is not None for _ in range(3))


def test_one_lost_deal_reply_and_one_site_with_its_own_key_do_not_end_every_round() -> None:
    net = Network()
    holders, _ = net.round((Stage.DEAL, 100, "reply"))
    assert holders is None and net.context is None
    fed = net.fed
    fed.clients[103] = CkksClient(fed.config, 103, identity=fed.identity(103), key=KeyOwner.generate(PARAMS))  # its own key file
    assert any(net.round()[0] is not None for _ in range(3))


@pytest.mark.slow
def test_availability_search_depth_three() -> None:
    out = availability_search(3)
    print(f"\n{out['states']} abstract states, {out['rounds']} rounds; {len(out['dead'])} dead")
    for plan, _, fixed in out["dead"].values():
        lost = [d for d in plan if d is not None and d[0] is Stage.DEAL and d[2] == "reply"]
        assert len(lost) >= 2 and fixed, _plan_text(plan)
    for plan, out_nodes, lost in out["stranded"].values():
        assert set(out_nodes) <= set(lost), (_plan_text(plan), out_nodes, lost)


def test_two_sites_with_keys_of_their_own_no_longer_end_every_round() -> None:
    """Two sites, each with a key file of its own, were a 1-1 tie before any key was pinned; the keyless
    honest nodes outnumber each of them, so they are dealt a new key and the round completes."""
    net = Network()
    fed = net.fed
    for node in (102, 103):
        fed.clients[node] = CkksClient(fed.config, node, identity=fed.identity(node), key=KeyOwner.generate(PARAMS))
    holders, refused = net.round()
    assert holders is not None and net.context is not None and all("nobody pinned" in refused[n] for n in (102, 103)), refused
