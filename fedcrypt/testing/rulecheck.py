"""The SecAgg client's rule as bit sets: conformance-tested against the real client, then searched.

:mod:`fedcrypt.testing.modelcheck` asks real clients every question, which reaches SecAgg+
with eight clients. This module reaches further with a *stated reduction*: it searches
the same space (same server choices, same reductions 1-5 of modelcheck's docstring) on a
bit-set model of the decisions a client makes, as :class:`~fedcrypt.secagg.ClientProtocol`
documents them, and trusts that model only as far as :func:`conformance` shows it agrees
with the real client:

* **signing** a survivor set ``U``: the client is in ``U``; its share holders in ``U`` are
  at least ``t`` and all shared keys with it;
* **unmasking** under ``U`` with ``s`` signatures: the same check, every survivor ``p``
  whose self-mask share it holds keeps ``t`` holders in ``U``; with ``verify_survivors``
  ``s >= max(t, floor((n + c)/2) + 1)`` and every such ``p != self`` skipped nobody in
  ``U``; it then reveals the self-mask shares of ``U`` and the key shares of the rest of
  its share senders.

:func:`conformance` builds real rounds for random views (victim bundle, colluders, survivor
sets, signer subsets) and compares every decision and every revealed share set with the
model; :func:`check_rule` refuses to search a configuration whose conformance sample found
a difference. Any plan found is replayed with real clients (:func:`modelcheck.replay`)
before it is reported.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from fedcrypt.errors import FedcryptError
from fedcrypt.secagg import ClientProtocol, SecAggConfig

from . import modelcheck as _mc

__all__ = ["Rule", "conformance", "check_rule", "check_honest_rule", "grid", "honest_grid"]


def _bits(mask: int):
    i = 0
    while mask:
        if mask & 1:
            yield i
        mask >>= 1
        i += 1


def _count(mask: int) -> int:
    return bin(mask).count("1")


def _mask(members) -> int:
    return sum(1 << i for i in members)


@dataclass(frozen=True)
class Rule:
    """The unmask rule: today's (``quorum`` and ``attestations`` on) or a weakened one."""

    quorum: bool = True
    attestations: bool = True
    survivor_holders: bool = True


class _Model:
    """One view (victim, its masking set, colluders) of one configuration, as bit sets."""

    def __init__(self, config: SecAggConfig, victim: int, masking: int, colluders: int, rule: Rule, dropped: int = 0) -> None:
        n = config.num_clients
        self.config, self.rule, self.t, self.n = config, rule, config.threshold, n
        self.victim, self.masking, self.colluders, self.dropped = victim, masking, colluders, dropped
        self.N = [sum(1 << j for j in config.neighbourhood(i, _mc._ROUND)) for i in range(n)]
        self.H = [self.N[i] | (1 << i) for i in range(n)]
        self.quorum = config.consistency_quorum if rule.quorum else self.t

    def senders(self, h: int) -> int:
        """Whose shares ``h`` received: the victim its bundle, the others every neighbour that shared."""
        return self.masking if h == self.victim else self.N[h] & ~self.dropped

    def masks(self, h: int) -> bool:
        """``h`` masks its input: enough of its share holders shared keys (else it aborts)."""
        return _count(self.senders(h)) + 1 >= self.t

    def signs(self, h: int, U: int) -> bool:
        if not (U >> h) & 1:
            return False
        live = self.H[h] & U
        return _count(live) >= self.t and not live & ~(self.senders(h) | (1 << h))

    def usable(self, h: int, U: int) -> bool:
        """Every unmask check but the signature count passes."""
        if not self.signs(h, U):
            return False
        for p in _bits(U & (self.senders(h) | (1 << h))):
            if self.rule.survivor_holders and _count(self.H[p] & U) < self.t:
                return False
            verify = self.config.verify_survivors and self.rule.attestations
            if verify and p != h and p == self.victim and (self.N[p] & ~self.masking) & U:
                return False  # the victim's attestation names a survivor it skipped
        return True

    def reveals(self, h: int, U: int) -> tuple[int, int]:
        """(owners of self-mask shares, owners of mask-key shares) ``h`` gives under ``U``."""
        held = self.senders(h) | (1 << h)
        return U & held, held & ~U & self.H[h]

    def wins(self, reveals: list[tuple[int, int]]) -> bool:
        v, t, C = self.victim, self.t, self.colluders
        seeds = _count(C & self.H[v])
        keys = [_count(C & self.H[x]) for x in range(self.n)]
        for seed_owners, key_owners in reveals:
            seeds += (seed_owners >> v) & 1
            for x in _bits(key_owners):
                keys[x] += 1
        if seeds < t:
            return False
        if keys[v] >= t:
            return True
        return all((C >> w) & 1 or keys[w] >= t for w in _bits(self.masking))


def _search_view(model: _Model, alive: int) -> tuple[tuple[int, int], ...] | None:
    """Groups ``((U, members), ...)`` that strip the victim's masks, or None."""
    honest = alive & ~model.colluders
    verify = model.config.verify_survivors
    sets = [U for U in range(1, alive + 1) if U & ~alive == 0]
    table = {}
    for U in sets:
        signers = [h for h in _bits(honest & U) if model.signs(h, U)]
        usable = [h for h in signers if model.usable(h, U)]
        if usable:
            table[U] = (signers, usable)
    if not verify:  # each client its own survivor set: pick, per client, what it reveals
        options: dict[int, dict[tuple[int, int], int]] = {}
        for U, (_, usable) in table.items():
            for h in usable:
                options.setdefault(h, {}).setdefault(model.reveals(h, U), U)
        clients = sorted(options)

        def assign(index: int, picked: list) -> list | None:
            if model.wins([r for r, _ in picked]):
                return picked
            if index == len(clients):
                return None
            for reveal, U in options[clients[index]].items():
                found = assign(index + 1, picked + [(reveal, (U, 1 << clients[index]))])
                if found is not None:
                    return found
            return assign(index + 1, picked)

        found = assign(0, [])
        return None if found is None else tuple(group for _, group in found)

    def group(U: int, members: list[int], signers: list[int]) -> list[tuple[int, int]] | None:
        if len(signers) + _count(model.colluders & U) < model.quorum:
            return None
        return [model.reveals(h, U) for h in members]

    for U, (signers, usable) in table.items():
        reveals = group(U, usable, signers)
        if reveals is not None and model.wins(reveals):
            return ((U, sum(1 << h for h in usable)),)
    keys = list(table)
    for i, U1 in enumerate(keys):
        for U2 in keys[i + 1 :]:
            s1, u1 = table[U1]
            s2, u2 = table[U2]
            if not model.wins([model.reveals(h, U1) for h in u1] + [model.reveals(h, U2) for h in u2]):
                continue
            overlap = sorted(set(s1) & set(s2))
            for mask in range(1 << len(overlap)):
                first = {h for k, h in enumerate(overlap) if mask >> k & 1}
                g1 = [h for h in s1 if h not in overlap or h in first]
                g2 = [h for h in s2 if h not in overlap or h not in first]
                r1 = group(U1, [h for h in u1 if h in g1], g1)
                r2 = group(U2, [h for h in u2 if h in g2], g2)
                if r1 is not None and r2 is not None and model.wins(r1 + r2):
                    members1 = sum(1 << h for h in u1 if h in g1)
                    members2 = sum(1 << h for h in u2 if h in g2)
                    return ((U1, members1), (U2, members2))
    return None


def conformance(
    config: SecAggConfig,
    *,
    trials: int = 200,
    seed: int = 0,
    client_factory=ClientProtocol,
    rule: Rule = Rule(),
    dropouts: bool = False,
) -> list[str]:
    """Compare the model with real clients on random views; the differences found (none: agree).

    Each trial builds a real round for a random victim bundle and colluder set, picks random
    survivor sets and signer subsets, and compares every signing decision, every unmask
    acceptance and every revealed share set. With ``dropouts`` the views are the honest
    server's instead: random clients drop before sharing keys and every other client
    (the victim too) receives the shares of each neighbour that shared. ``seed`` drives the
    choice of views only (public test data, never a secret).
    """
    choose = random.Random(seed)  # noqa: S311 - picks test views, never a secret
    n = config.num_clients
    differences: list[str] = []
    victim = 0
    neighbours = sorted(config.neighbourhood(victim, _mc._ROUND))
    for trial in range(trials):
        colluders = frozenset(choose.sample(range(1, n), choose.randint(0, config.max_colluders)))
        if dropouts:
            others = sorted(set(range(1, n)) - colluders)
            early = frozenset(choose.sample(others, choose.randint(0, len(others))))
            masking = frozenset(neighbours) - early
        else:
            early = frozenset()
            masking = frozenset(choose.sample(neighbours, choose.randint(config.threshold - 1, len(neighbours))))
        model = _Model(config, victim, _mask(masking), _mask(colluders), rule, dropped=_mask(early))
        try:
            view = _mc._View(config, victim, colluders, None if dropouts else masking, early, client_factory)
        except FedcryptError:
            if all(model.masks(h) for h in range(n) if h not in early):
                differences.append(f"trial {trial}: a client refused to mask, the model says all mask")
            continue
        if not all(model.masks(h) for h in range(n) if h not in early):
            differences.append(f"trial {trial}: every client masked, the model says one aborts")
            continue
        search = _mc._Search(config, "malicious", client_factory, _mc.CheckResult(config, "conformance"))
        search.signed, search.after_sign = {}, {}
        U = tuple(sorted(choose.sample(range(n), choose.randint(1, n))))
        mask = sum(1 << h for h in U)
        honest = [h for h in U if h not in colluders and h not in early]
        if config.verify_survivors:
            signed = search.sign(view, U)
            expected = {h for h in honest if model.signs(h, mask)}
            if set(signed) != expected:
                differences.append(f"trial {trial}: {sorted(signed)} signed {U}, the model says {sorted(expected)}")
                continue
            group = frozenset(choose.sample(sorted(signed), choose.randint(0, len(signed)))) if signed else frozenset()
            count = len(group) + len(colluders & set(U))
        else:
            group, count = frozenset(honest), 0
        accepted, replies = search.unlock(view, U, group)
        for h in sorted(group):
            expect = model.usable(h, mask) and (not config.verify_survivors or count >= model.quorum)
            if (h in accepted) != expect:
                differences.append(f"trial {trial}: client {h} under {U} with {count} signatures: real {h in accepted}")
            elif expect:
                seeds = sum(1 << o for o, _ in replies[h].self_mask_shares)
                keys = sum(1 << o for o, _ in replies[h].mask_key_shares)
                if (seeds, keys) != model.reveals(h, mask):
                    differences.append(f"trial {trial}: client {h} under {U} reveals other shares than the model")
    return differences


def check_rule(
    config: SecAggConfig,
    *,
    colluders: int | None = None,
    rule: Rule = Rule(),
    client_factory=ClientProtocol,
    conformance_trials: int = 100,
) -> _mc.CheckResult:
    """:func:`modelcheck.check` (malicious server) on the model, after a conformance sample.

    Raises:
        AssertionError: the model and the real client disagree on the sample (nothing searched).
    """
    differences = conformance(config, trials=conformance_trials, client_factory=client_factory, rule=rule)
    assert not differences, differences[:3]
    c = config.max_colluders if colluders is None else colluders
    result = _mc.CheckResult(config, "malicious (rule)")
    start = time.perf_counter()
    victim, alive = 0, (1 << config.num_clients) - 1
    for C in _mc._colluder_sets(config, victim, c):
        for M in _mc._masking_sets(config, victim, C):
            model = _Model(config, victim, sum(1 << w for w in M), sum(1 << x for x in C), rule)
            result.rounds += 1
            groups = _search_view(model, alive)
            if groups is None:
                continue
            plan = _mc.Plan(
                victim,
                frozenset(C),
                frozenset(M),
                frozenset(),
                tuple((tuple(_bits(U)), frozenset(_bits(members))) for U, members in groups),
            )
            recovered, true = _mc.replay(config, plan, client_factory)  # a plan is only a plan if it works
            if (recovered == true).all():
                result.plans.append(plan)
                result.seconds = time.perf_counter() - start
                return result
    result.seconds = time.perf_counter() - start
    return result


def _submasks(mask: int):
    sub = mask
    while sub:
        yield sub
        sub = (sub - 1) & mask


def check_honest_rule(
    config: SecAggConfig,
    *,
    colluders: int | None = None,
    rule: Rule = Rule(),
    client_factory=ClientProtocol,
    conformance_trials: int = 100,
) -> _mc.CheckResult:
    """:func:`modelcheck.check` with ``server="honest-but-curious"`` on the model.

    The server follows the protocol and ``c`` clients collude; the search enumerates every
    set of honest clients other than the victim that drops before sharing keys, and every
    survivor set ``U`` of the rest, and asks each honest client of ``U`` the honest unmask
    request (the victim masks with every neighbour that shared). It first compares the
    model with the real client on a sample of such views (:func:`conformance` with
    ``dropouts``); any plan is replayed with real clients before it is reported.

    Raises:
        AssertionError: the model and the real client disagree on the sample (nothing searched).
    """
    differences = conformance(config, trials=conformance_trials, client_factory=client_factory, rule=rule, dropouts=True)
    assert not differences, differences[:3]
    c = config.max_colluders if colluders is None else colluders
    result = _mc.CheckResult(config, "honest-but-curious (rule)")
    start = time.perf_counter()
    n, victim = config.num_clients, 0
    everyone = (1 << n) - 1
    neighbours = sum(1 << w for w in config.neighbourhood(victim, _mc._ROUND))
    for C in _mc._colluder_sets(config, victim, c):
        others = everyone & ~_mask(C) & ~(1 << victim)
        for early in [0, *_submasks(others)]:
            model = _Model(config, victim, neighbours & ~early, _mask(C), rule, dropped=early)
            alive = everyone & ~early
            if not all(model.masks(h) for h in _bits(alive)):
                continue  # a client aborts before masking: no input to attack
            result.rounds += 1
            for U in _submasks(alive):
                members = [h for h in _bits(U & ~model.colluders) if model.usable(h, U)]
                if not model.wins([model.reveals(h, U) for h in members]):
                    continue
                plan = _mc.Plan(
                    victim,
                    frozenset(C),
                    frozenset(_bits(model.masking)),
                    frozenset(_bits(early)),
                    ((tuple(_bits(U)), frozenset(members)),),
                )
                recovered, true = _mc.replay(config, plan, client_factory)  # a plan is only a plan if it works
                if (recovered == true).all():
                    result.plans.append(plan)
                    result.seconds = time.perf_counter() - start
                    return result
    result.seconds = time.perf_counter() - start
    return result


def grid(max_secagg_plus: int = 10, max_colluders: int = 2) -> list[SecAggConfig]:
    """The malicious-server configurations SecAgg+ with ``n <= max_secagg_plus`` (for :func:`check_rule`)."""
    return [
        config
        for config in _mc.configurations(max_secagg=2, max_secagg_plus=max_secagg_plus, max_colluders=max_colluders)
        if config.verify_survivors and not config.complete_graph
    ]


def honest_grid(min_clients: int = 9, max_secagg_plus: int = 10, max_colluders: int = 2) -> list[SecAggConfig]:
    """The honest-but-curious configurations SecAgg+ with ``min_clients <= n <= max_secagg_plus``."""
    return [
        config
        for config in _mc.configurations(max_secagg=2, max_secagg_plus=max_secagg_plus, max_colluders=max_colluders)
        if not config.verify_survivors and not config.complete_graph and config.num_clients >= min_clients
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m fedcrypt.testing.rulecheck``: search the SecAgg+ grid on the model, one line each.

    ``--server malicious`` (the default) searches the malicious-server configurations with
    ``n <= --max-clients``; ``--server honest-but-curious`` the honest-but-curious ones with
    ``--min-clients <= n <= --max-clients`` (modelcheck's real-client search covers n <= 8).
    Exit status 1 when some configuration has a plan.
    """
    import argparse
    import warnings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--server", choices=("malicious", "honest-but-curious"), default="malicious")
    parser.add_argument("--min-clients", type=int, default=4)
    parser.add_argument("--max-clients", type=int, default=10)
    parser.add_argument("--max-colluders", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", category=UserWarning)  # the honest-but-curious mode warns per client
    total, found = time.perf_counter(), 0
    if args.server == "malicious":
        configs = [c for c in grid(args.max_clients, args.max_colluders) if c.num_clients >= args.min_clients]
        search = check_rule
    else:
        configs = honest_grid(args.min_clients, args.max_clients, args.max_colluders)
        search = check_honest_rule
    for config in configs:
        result = search(config)
        found += not result.safe
        print(
            f"n={config.num_clients} k={config.degree} t={config.threshold} c={config.max_colluders} "
            f"{args.server} views={result.rounds} {result.seconds:.1f}s "
            f"{'no plan' if result.safe else 'PLAN ' + result.plans[0].describe()}",
            flush=True,
        )
    print(f"{len(configs)} configurations, {found} with a plan; {time.perf_counter() - total:.0f} s in all")
    return 1 if found else 0


if __name__ == "__main__":  # pragma: no cover - a command, measured in the closing notes
    raise SystemExit(main())
