"""A protocol model checker for SecAgg / SecAgg+: can a server strip every mask of one honest input?

:func:`check` searches the choices of a server (with up to ``c`` colluding clients, whose
secrets, shares and signing keys it holds) and decides, from the answers of *real*
:class:`~fedcrypt.secagg.ClientProtocol` objects (or a subclass given as
``client_factory``), whether some plan lets it remove every mask of an honest client's
masked input ``y_v = x_v + PRG(b_v) + sum_w +-PRG(s_vw)``. The server wins for victim ``v``
when it holds ``t`` shares of ``b_v`` and, for every neighbour ``w`` that ``v`` masked with,
``w`` is a colluder or it holds ``t`` shares of ``s_w^SK`` (or of ``s_v^SK``).
:func:`replay` runs a plan end to end with real cryptography and returns the recovered
vector, so a plan is never only a claim of the search.

Two servers:

* ``server="malicious"``: the server chooses, per honest client, what it forwards and
  which survivor sets and unmask requests it sends. The search covers these choices under
  the reductions below, each a dominance argument (the excluded choice never gives the
  server more):

  1. *Key directories are complete and honest, and there is one instance of the round.*
     Adverts are signed in the malicious-server mode, so a substituted key is refused; a
     shorter directory only shrinks whom a client shares with and masks with, which the
     bundle below controls. Signed statements replayed from another instance of the same
     round are refused because they bind the directory digest (tested separately:
     tests/secagg/test_stale_instance.py); share ciphertexts and mask seeds do not bind it,
     so what keeps two instances apart is the masking attestation and the live-holders
     check (SECURITY.md, "Secrets at rest": a forked-instance search found no plan).
  2. *Only the victim's share bundle is cut*: it receives the ciphertexts of a chosen set
     ``M`` of its neighbours (every ``M`` the victim accepts is tried). Every other honest
     client receives all ciphertexts addressed to it: holding more shares and a larger
     ``U2`` only widens what it can reveal and accept.
  3. *A client asked to unmask under survivor set ``S`` is asked for the most it may give*:
     every dropped neighbour that shared keys with it, with all attestations and the
     signatures of everyone who signed ``S`` (colluders sign anything).
  4. *Survivor sets.* Without signatures (``verify_survivors=False``) every honest client
     may be shown its own survivor set: the search tries every assignment of sets to
     clients (by what each reveals). With signatures a client unmasks only under the set
     it signed and with enough signatures on it, so clients unmask in groups: the search
     tries one set, and every pair of sets with every split of the honest clients between
     them. Plans with three or more signed sets are outside the search.
  5. *Signatures count, not names*: a client's acceptance is monotone in the valid
     signatures it is shown and depends on them only through their number; the search
     binary-searches that number per client and set. A plan is only reported after its
     unmask requests, with exactly its groups' signatures, were answered by real clients.

* ``server="honest-but-curious"``: the server follows the protocol and sees everything
  it receives, and ``c`` clients collude; the search enumerates the dropouts that matter
  (which clients drop before sharing keys, and which survivors remain before unmasking)
  and asks every survivor the honest unmask request.

Victims and colluders: every victim, and every colluder set of size ``c`` among the
victim's two-hop neighbourhood (more colluders never help the server less); for the
complete graph, symmetry reduces victims to client 0 and colluders to the highest ids.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from fedcrypt.crypto import Ed25519KeyPair, Share, X25519KeyPair, shamir_combine
from fedcrypt.errors import FedcryptError
from fedcrypt.secagg import (
    ClientProtocol,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    SecAggConfig,
    ShareBundle,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    keyschedule,
)

__all__ = ["Plan", "CheckResult", "check", "replay"]

_ROUND = 5
_LENGTH = 4

ClientFactory = Callable[..., ClientProtocol]


@dataclass(frozen=True)
class Plan:
    """One attack: who is attacked, what the victim is shown, which groups unmask under which set."""

    victim: int
    colluders: frozenset[int]
    masking_set: frozenset[int]
    early_dropped: frozenset[int]
    groups: tuple[tuple[tuple[int, ...], frozenset[int]], ...]

    def describe(self) -> str:
        """One line a reader can follow."""
        parts = [
            f"victim {self.victim}",
            f"colluders {sorted(self.colluders)}",
            f"victim masks with {sorted(self.masking_set)}",
        ]
        if self.early_dropped:
            parts.append(f"dropped before sharing keys {sorted(self.early_dropped)}")
        for survivors, members in self.groups:
            parts.append(f"{sorted(members)} unmask under survivors {list(survivors)}")
        return "; ".join(parts)


@dataclass
class CheckResult:
    """What :func:`check` searched and found."""

    config: SecAggConfig
    server: str
    plans: list[Plan] = field(default_factory=list)
    rounds: int = 0
    probes: int = 0
    seconds: float = 0.0

    @property
    def safe(self) -> bool:
        """No plan found within the search's bounds."""
        return not self.plans


class _View:
    """One real round driven to just after the masked inputs, for one victim view."""

    def __init__(
        self,
        config: SecAggConfig,
        victim: int,
        colluders: frozenset[int],
        masking_set: frozenset[int] | None,
        early_dropped: frozenset[int],
        factory: ClientFactory,
    ) -> None:
        n = config.num_clients
        self.config, self.victim, self.colluders = config, victim, colluders
        verify = config.verify_survivors
        self.signing = [Ed25519KeyPair.generate() for _ in range(n)] if verify else None
        keys = {i: k.public_bytes for i, k in enumerate(self.signing)} if self.signing else None
        ring = config.codec.ring_dtype
        self.inputs = [np.arange(_LENGTH, dtype=ring) * (i + 3) + 7 for i in range(n)]
        self.clients = {
            i: factory(
                config,
                i,
                round_id=_ROUND,
                vector=self.inputs[i],
                signing_key=self.signing[i] if self.signing else None,
                verify_keys=keys,
            )
            for i in range(n)
        }
        adverts = {i: c.advertise() for i, c in self.clients.items()}
        self.adverts = adverts
        shares: dict[int, EncryptedShares] = {}
        for i, client in self.clients.items():
            shown = range(n) if verify else sorted(config.holders(i, _ROUND))  # as the honest server shows it
            reply = client.handle(KeyDirectory(_ROUND, i, tuple(adverts[v] for v in shown)))
            assert isinstance(reply, EncryptedShares)  # a client answers a key directory with its shares
            shares[i] = reply
        self.shared = frozenset(range(n)) - early_dropped  # U2
        self.forwarded: dict[int, frozenset[int]] = {}
        self.masked: dict[int, MaskedInput] = {}
        for i in sorted(self.shared):
            senders = sorted(v for v in self.shared - {i} if i in config.neighbourhood(v, _ROUND))
            if i == victim and masking_set is not None:
                senders = [v for v in senders if v in masking_set]
            bundle = tuple((v, blob) for v in senders for r, blob in shares[v].ciphertexts if r == i)
            self.forwarded[i] = frozenset(senders)
            masked = self.clients[i].handle(ShareBundle(_ROUND, i, bundle))
            assert isinstance(masked, MaskedInput)  # a client answers a share bundle with its masked input
            self.masked[i] = masked
        self.masking_set = self.forwarded[victim]

    def attestation(self, p: int) -> tuple[int, tuple[int, ...], bytes]:
        if p in self.colluders:  # a colluder attests whatever helps: it skipped nobody
            client = self.clients[p]
            statement = keyschedule.masking_bytes(round_id=_ROUND, context=client.context, directory=client.directory_digest, client=p, skipped=())
            return (p, (), self._signing_key(p).sign(statement))
        masked = self.masked[p]
        return (p, masked.skipped, masked.attestation)

    def consistency_signature(self, p: int, survivors: tuple[int, ...]) -> bytes:
        client = self.clients[p]
        statement = keyschedule.consistency_bytes(round_id=_ROUND, context=client.context, directory=client.directory_digest, survivors=survivors)
        return self._signing_key(p).sign(statement)

    def _signing_key(self, p: int) -> Ed25519KeyPair:
        assert self.signing is not None  # asked only in verify_survivors rounds, which have signing keys
        return self.signing[p]


def _fork(client: ClientProtocol) -> ClientProtocol:
    # After the masked input a client only rebinds its attributes (it never mutates a
    # shared container in place), so a shallow copy is an independent continuation.
    return copy.copy(client)


class _Search:
    def __init__(self, config: SecAggConfig, server: str, factory: ClientFactory, result: CheckResult) -> None:
        self.config, self.server, self.factory, self.result = config, server, factory, result
        self.t = config.threshold

    # ---------------------------------------------------------------- per survivor set
    def unlock(
        self,
        view: _View,
        survivors: tuple[int, ...],
        signers: frozenset[int],
        *,
        only: int | None = None,
    ) -> tuple[frozenset[int], dict]:
        """Ask each honest signer (or ``only`` that one) to unmask under ``survivors``, with the
        signatures of ``signers`` and the colluders in it. Returns who answered and the replies."""
        config, S = self.config, frozenset(survivors)
        signatures: tuple[tuple[int, bytes], ...] = ()
        if config.verify_survivors:
            signed = {p: view.consistency_signature(p, survivors) for p in sorted(view.colluders & S)}
            signed.update({p: self.signed[(p, survivors)] for p in signers})
            signatures = tuple(sorted(signed.items()))
        accepted, revealed = set(), {}
        for h in sorted(signers) if only is None else [only]:
            client = self.after_sign.get((h, survivors), view.clients[h])
            probe = _fork(client)
            holders = config.holders(h, _ROUND)
            dropped = tuple(sorted((holders & (view.forwarded[h] | {h})) - S))
            attestations: tuple[tuple[int, tuple[int, ...], bytes], ...] = ()
            if config.verify_survivors:
                attestations = tuple(view.attestation(p) for p in sorted((holders - {h}) & S & (view.forwarded[h])))
            request = UnmaskRequest(_ROUND, h, survivors, dropped, signatures, attestations)
            self.result.probes += 1
            try:
                reply = probe.handle(request)
            except FedcryptError:
                continue
            assert isinstance(reply, UnmaskShares)
            accepted.add(h)
            revealed[h] = reply
        return frozenset(accepted), revealed

    def sign(self, view: _View, survivors: tuple[int, ...]) -> frozenset[int]:
        """Honest clients of ``survivors`` that sign it (each a fork: one signature per fork)."""
        out = set()
        for h in survivors:
            if h in view.colluders or h not in view.masked:
                continue
            probe = _fork(view.clients[h])
            self.result.probes += 1
            try:
                reply = probe.handle(SurvivorList(_ROUND, h, survivors))
            except FedcryptError:
                continue
            assert isinstance(reply, ConsistencySignature)
            self.signed[(h, survivors)] = reply.signature
            self.after_sign[(h, survivors)] = probe
            out.add(h)
        return frozenset(out)

    # ---------------------------------------------------------------- knowledge
    def wins(self, view: _View, replies: Iterable[UnmaskShares]) -> bool:
        v, t, C = view.victim, self.t, view.colluders
        seeds: dict[int, set[int]] = {}
        keys: dict[int, set[int]] = {}
        for reply in replies:
            for owner, _ in reply.self_mask_shares:
                seeds.setdefault(owner, set()).add(reply.sender)
            for owner, _ in reply.mask_key_shares:
                keys.setdefault(owner, set()).add(reply.sender)

        def held(owner: int, table: dict[int, set[int]]) -> int:
            colluding = {h for h in C if owner in _shares_of(view, h)}
            return len(table.get(owner, set()) | colluding)

        if v in C or held(v, seeds) < t:
            return False
        if held(v, keys) >= t:
            return True
        return all(w in C or held(w, keys) >= t for w in view.masking_set)

    # ---------------------------------------------------------------- one view
    def options(self, view: _View, survivors: tuple[int, ...]) -> dict[int, tuple[int, UnmaskShares]]:
        """Per honest client usable under ``survivors`` (with every signature on it): what it reveals.

        Values are ``(signers, reply)``: how many honest clients signed ``survivors`` (the
        fewest it needs is found later, only where a plan depends on it: :meth:`need`).
        """
        if not self.config.verify_survivors:
            honest = frozenset(h for h in survivors if h not in view.colluders)
            _, revealed = self.unlock(view, survivors, honest)
            return {h: (0, reply) for h, reply in revealed.items()}
        signers = self.sign(view, survivors)
        _, revealed = self.unlock(view, survivors, signers)
        self.signers_of[survivors] = signers
        return {h: (len(signers), reply) for h, reply in revealed.items()}

    def need(self, view: _View, survivors: tuple[int, ...], h: int) -> int:
        """The fewest signatures (honest + colluding) ``h`` unmasks with under ``survivors``.

        Acceptance is monotone in the signatures, so a binary search over growing sets of
        honest signers (``h`` first) finds it with real calls.
        """
        key = (survivors, h)
        if key not in self.needs:
            signers = self.signers_of[survivors]
            order = [h] + [p for p in sorted(signers) if p != h]
            low, high = 1, len(order)
            while low < high:
                middle = (low + high) // 2
                accepted, _ = self.unlock(view, survivors, frozenset(order[:middle]), only=h)
                if h in accepted:
                    high = middle
                else:
                    low = middle + 1
            self.needs[key] = low + len(view.colluders & set(survivors))
        return self.needs[key]

    def explore(self, view: _View, early: frozenset[int]) -> Plan | None:
        config, v = self.config, view.victim
        self.signed: dict[tuple[int, tuple[int, ...]], bytes] = {}
        self.after_sign: dict[tuple[int, tuple[int, ...]], ClientProtocol] = {}
        self.signers_of: dict[tuple[int, ...], frozenset[int]] = {}
        self.needs: dict[tuple[tuple[int, ...], int], int] = {}
        alive = sorted(view.shared)
        candidates = [S for size in range(1, len(alive) + 1) for S in itertools.combinations(alive, size)]
        if self.server == "honest-but-curious":
            # the honest server asks every survivor the same request; colluders give all
            for S in candidates:
                if v not in S:
                    continue
                honest = frozenset(h for h in S if h not in view.colluders)
                _, revealed = self.unlock(view, S, honest)
                if self.wins(view, revealed.values()):
                    return self._plan(view, early, ((S, frozenset(revealed)),))
            return None
        table = {S: self.options(view, S) for S in candidates}
        table = {S: opts for S, opts in table.items() if opts}
        if not config.verify_survivors:
            return self.assign(view, early, table)
        # one survivor set: every client that can unmask under it does
        for S, opts in table.items():
            group = self.feasible(view, S, frozenset(opts), opts)
            if group and self.wins(view, [opts[h][1] for h in group]):
                return self.confirm(view, early, ((S, group),))
        # two survivor sets, honest clients split between them every way
        sets = list(table)
        for i, S1 in enumerate(sets):
            for S2 in sets[i + 1 :]:
                o1, o2 = table[S1], table[S2]
                if not self.wins(view, [r for _, r in o1.values()] + [r for _, r in o2.values()]):
                    continue
                overlap = sorted(set(o1) & set(o2))
                for mask in range(1 << len(overlap)):
                    first = {h for k, h in enumerate(overlap) if mask >> k & 1}
                    g1 = self.feasible(view, S1, frozenset((set(o1) - set(overlap)) | first), o1)
                    g2 = self.feasible(view, S2, frozenset((set(o2) - set(overlap)) | (set(overlap) - first)), o2)
                    if g1 and g2 and self.wins(view, [o1[h][1] for h in g1] + [o2[h][1] for h in g2]):
                        plan = self.confirm(view, early, ((S1, g1), (S2, g2)))
                        if plan is not None:
                            return plan
        return None

    def feasible(self, view: _View, S: tuple[int, ...], group: frozenset[int], opts) -> frozenset[int]:
        """The largest subgroup whose members all find enough signatures in it (plus colluders)."""
        members = set(group)
        if len(members) == len(self.signers_of.get(S, ())):
            return frozenset(members)  # they answered with exactly these signatures
        colluding = len(view.colluders & set(S))
        while members:
            short = {h for h in members if len(members) + colluding < self.need(view, S, h)}
            if not short:
                return frozenset(members)
            members -= short
        return frozenset()

    def assign(self, view: _View, early: frozenset[int], table) -> Plan | None:
        """Without signatures each client may be shown its own survivor set: search the assignments."""
        v, t = view.victim, self.t
        relevant = {v} | set(view.masking_set)
        choices: dict[int, dict[tuple, tuple[int, ...]]] = {}
        for S, opts in table.items():
            for h, (_, reply) in opts.items():
                profile = (
                    frozenset(o for o, _ in reply.self_mask_shares if o == v),
                    frozenset(o for o, _ in reply.mask_key_shares if o in relevant),
                )
                if profile != (frozenset(), frozenset()):
                    choices.setdefault(h, {}).setdefault(profile, S)
        clients = sorted(choices)
        need_seed = t - sum(1 for h in view.colluders if v in _shares_of(view, h))

        def count_keys(owner: int, picked: list) -> int:
            colluding = sum(1 for h in view.colluders if owner in _shares_of(view, h))
            return colluding + sum(1 for (_, keys) in picked if owner in keys)

        def done(picked: list) -> bool:
            if sum(1 for (seeds, _) in picked if v in seeds) < need_seed:
                return False
            if count_keys(v, picked) >= t:
                return True
            return all(w in view.colluders or count_keys(w, picked) >= t for w in view.masking_set)

        def search(index: int, picked: list, chosen: list) -> Plan | None:
            if done(picked):
                return self.confirm(view, early, tuple((S, frozenset({h})) for h, S in chosen))
            if index == len(clients):
                return None
            h = clients[index]
            for profile, S in choices[h].items():
                found = search(index + 1, picked + [profile], chosen + [(h, S)])
                if found is not None:
                    return found
            return search(index + 1, picked, chosen)

        return search(0, [], [])

    def confirm(self, view: _View, early: frozenset[int], groups) -> Plan | None:
        """Run the groups' unmask requests for real (exactly these signers); the plan if it wins."""
        replies: list[UnmaskShares] = []
        final = []
        for S, members in groups:
            accepted, revealed = self.unlock(view, S, members)
            if accepted != members:
                return None
            replies.extend(revealed.values())
            final.append((S, accepted))
        if not self.wins(view, replies):
            return None
        return self._plan(view, early, tuple(final))

    def _plan(self, view: _View, early: frozenset[int], groups) -> Plan:
        return Plan(view.victim, view.colluders, view.masking_set, early, tuple(groups))


def _shares_of(view: _View, holder: int) -> frozenset[int]:
    """Owners whose shares ``holder`` holds (it received their ciphertext, or it is the owner)."""
    return view.forwarded.get(holder, frozenset()) | {holder}


def _colluder_sets(config: SecAggConfig, victim: int, c: int) -> list[frozenset[int]]:
    others = sorted(set(range(config.num_clients)) - {victim})
    if c == 0:
        return [frozenset()]
    if config.complete_graph:
        return [frozenset(others[-c:])]
    near: set[int] = set()
    for w in config.neighbourhood(victim, _ROUND):
        near |= config.holders(w, _ROUND)
    return [frozenset(s) for s in itertools.combinations(sorted(near - {victim}), c)]


def _masking_sets(config: SecAggConfig, victim: int, colluders: frozenset[int]) -> list[frozenset[int]]:
    neighbours = sorted(config.neighbourhood(victim, _ROUND))
    out, seen = [], set()
    for size in range(config.threshold - 1, len(neighbours) + 1):
        for M in itertools.combinations(neighbours, size):
            key = (len(set(M) & colluders), len(M)) if config.complete_graph else M
            if key in seen:
                continue  # the complete graph is symmetric in the honest non-victims
            seen.add(key)
            out.append(frozenset(M))
    return out


def check(
    config: SecAggConfig,
    *,
    server: str = "malicious",
    colluders: int | None = None,
    client_factory: ClientFactory = ClientProtocol,
    first_only: bool = True,
) -> CheckResult:
    """Search for a plan that strips every mask of one honest client's input.

    Args:
        config: the round parameters (small: the search is exponential in ``num_clients``).
        server: ``"malicious"`` or ``"honest-but-curious"`` (see the module docstring).
        colluders: how many clients collude; default ``config.max_colluders``.
        client_factory: builds the clients (``ClientProtocol`` or a subclass under test).
        first_only: stop at the first plan.

    Returns:
        The plans found (none: the configuration is safe within the search's bounds), the
        number of real rounds and client calls, and the run time.
    """
    if server not in ("malicious", "honest-but-curious"):
        raise ValueError(f"server must be 'malicious' or 'honest-but-curious', got {server!r}")
    c = config.max_colluders if colluders is None else colluders
    result = CheckResult(config, server)
    start = time.perf_counter()
    search = _Search(config, server, client_factory, result)
    victims = [0]  # the complete graph and the Harary graph are vertex-transitive
    for victim in victims:
        for C in _colluder_sets(config, victim, c):
            views: list[tuple[frozenset[int] | None, frozenset[int]]]
            if server == "malicious":
                views = [(M, frozenset()) for M in _masking_sets(config, victim, C)]
            else:  # honest server: clients drop before sharing keys, the victim's view follows
                others = sorted(set(range(config.num_clients)) - {victim} - C)
                views = [(None, frozenset(D)) for size in range(len(others) + 1) for D in itertools.combinations(others, size)]
            for M, early in views:
                try:
                    view = _View(config, victim, C, M, early, client_factory)
                except FedcryptError:
                    continue  # some client refused this view: nothing to attack
                result.rounds += 1
                plan = search.explore(view, early)
                if plan is not None:
                    result.plans.append(plan)
                    if first_only:
                        result.seconds = time.perf_counter() - start
                        return result
    result.seconds = time.perf_counter() - start
    return result


def replay(config: SecAggConfig, plan: Plan, client_factory: ClientFactory = ClientProtocol) -> tuple[np.ndarray, np.ndarray]:
    """Run ``plan`` with real clients and cryptography; return (recovered input, true input).

    Raises:
        AssertionError: the plan does not work against these clients.
    """
    view = _View(config, plan.victim, plan.colluders, plan.masking_set, plan.early_dropped, client_factory)
    search = _Search(config, "malicious", client_factory, CheckResult(config, "replay"))
    search.signed, search.after_sign = {}, {}
    seeds: dict[int, dict[int, Share]] = {}
    keys: dict[int, dict[int, Share]] = {}
    for survivors, members in plan.groups:
        if config.verify_survivors:
            search.sign(view, survivors)
        _, revealed = search.unlock(view, survivors, frozenset(members))
        for reply in revealed.values():
            for owner, blob in reply.self_mask_shares:
                seeds.setdefault(owner, {})[reply.sender] = Share.from_bytes(blob)
            for owner, blob in reply.mask_key_shares:
                keys.setdefault(owner, {})[reply.sender] = Share.from_bytes(blob)
    for h in plan.colluders:  # a colluder hands over both shares of everyone it holds
        for owner, (seed_share, key_share) in view.clients[h]._shares.items():  # noqa: SLF001 - a corrupt client
            seeds.setdefault(owner, {})[h] = seed_share
            keys.setdefault(owner, {})[h] = key_share
    t, v = config.threshold, plan.victim
    assert len(seeds.get(v, {})) >= t, "the plan does not yield the victim's self-mask seed"
    y = view.masked[v].vector.copy()
    ring = config.codec.ring_dtype
    from fedcrypt.crypto import mask_accumulate

    masks = [(shamir_combine(list(seeds[v].values())[:t], t), -1)]
    for w in sorted(view.masking_set):
        if w in plan.colluders:
            secret_keys = view.clients[w]._mask_keys  # noqa: SLF001 - a corrupt client
            assert secret_keys is not None  # set by advertise(), which every client of the view ran
            shared = secret_keys.exchange(view.adverts[v].mask_public_key)
        else:
            assert len(keys.get(w, {})) >= t, f"the plan does not yield the mask key of client {w}"
            secret = shamir_combine(list(keys[w].values())[:t], t)
            shared = X25519KeyPair.from_private_bytes(secret.reveal()).exchange(view.adverts[v].mask_public_key)
        seed = keyschedule.pairwise_seed(shared, round_id=_ROUND, a=v, b=w, context=view.clients[v].context)
        masks.append((seed, -keyschedule.mask_sign(v, w)))
    mask_accumulate(y, masks)
    return y.astype(ring), view.inputs[v]


def configurations(max_secagg: int = 7, max_secagg_plus: int = 8, max_colluders: int = 2) -> list[SecAggConfig]:
    """Every configuration :class:`~fedcrypt.secagg.SecAggConfig` accepts within the bounds, both modes.

    SecAgg: ``2 <= n <= max_secagg``; SecAgg+: ``n <= max_secagg_plus`` with every accepted
    degree ``k < n - 1``; every threshold and ``c <= max_colluders`` the config accepts.
    """
    out = []
    graphs: list[tuple[int, int | None]] = [(n, None) for n in range(2, max_secagg + 1)]
    graphs += [(n, k) for n in range(4, max_secagg_plus + 1) for k in range(1, n - 1)]
    for n, k in graphs:
        for verify in (True, False):
            for c in range(max_colluders + 1):
                for t in range(1, n + 1):
                    try:
                        config = SecAggConfig(
                            num_clients=n,
                            threshold=t,
                            neighbours=k,
                            verify_survivors=verify,
                            max_colluders=c,
                            graph_seed=b"model-check",
                        )
                    except ValueError:
                        continue
                    out.append(config)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m fedcrypt.testing.modelcheck``: the grid of :func:`configurations`, one line each."""
    import argparse
    import warnings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--max-secagg", type=int, default=7)
    parser.add_argument("--max-secagg-plus", type=int, default=8)
    parser.add_argument("--max-colluders", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", category=UserWarning)  # the honest-but-curious mode warns per client
    total, found = time.perf_counter(), 0
    print("n  k  t  c  mode              server              rounds  probes   seconds  result", flush=True)
    for config in configurations(args.max_secagg, args.max_secagg_plus, args.max_colluders):
        server = "malicious" if config.verify_survivors else "honest-but-curious"
        result = check(config, server=server)
        found += not result.safe
        verdict = "no plan" if result.safe else "PLAN: " + result.plans[0].describe()
        print(
            f"{config.num_clients:<2} {config.degree:<2} {config.threshold:<2} {config.max_colluders:<2} "
            f"{config.threat_model:<17} {server:<19} {result.rounds:>6} {result.probes:>7} {result.seconds:>9.1f}  {verdict}",
            flush=True,
        )
    print(f"{found} configuration(s) with a plan; {time.perf_counter() - total:.0f} s in all")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
