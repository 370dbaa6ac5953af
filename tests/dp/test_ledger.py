"""PrivacyLedger: refuses overspending, survives kill -9, excludes concurrent overspending."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dp_accounting as dpa
import pytest

from fedcrypt.dp import PrivacyLedger, event_epsilon
from fedcrypt.errors import BudgetExceededError, LedgerError

ROUND = dpa.PoissonSampledDpEvent(0.05, dpa.GaussianDpEvent(2.0))


def test_spend_records_and_reports(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", epsilon_budget=10.0, delta=1e-5)
    first = ledger.spend(ROUND)
    second = ledger.spend(ROUND)
    assert 0 < first < second
    assert second == pytest.approx(event_epsilon([ROUND, ROUND], 1e-5), rel=1e-9)
    assert [e.round for e in ledger.entries()] == [1, 2]
    assert ledger.entries()[1].event == ROUND
    assert ledger.spent == pytest.approx(second) and ledger.remaining == pytest.approx(10.0 - second)
    ledger.verify()


def test_refusal_changes_nothing(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", epsilon_budget=1.0, delta=1e-5)
    ledger.spend(dpa.GaussianDpEvent(8.0))
    before = (len(ledger), ledger.spent, [e.event_json for e in ledger])
    with pytest.raises(BudgetExceededError, match=r"past the budget 1; nothing was recorded"):
        ledger.spend(dpa.GaussianDpEvent(1.0))
    assert (len(ledger), ledger.spent, [e.event_json for e in ledger]) == before
    # a smaller spend still fits afterwards
    ledger.spend(dpa.GaussianDpEvent(20.0))
    assert len(ledger) == 2


def test_unsupported_event_is_refused_before_anything(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", epsilon_budget=5.0, delta=1e-5)
    with pytest.raises(TypeError, match=r"unsupported DpEvent type RandomizedResponseDpEvent"):
        ledger.spend(dpa.RandomizedResponseDpEvent(0.5, 2))
    assert len(ledger) == 0


def test_reopen_keeps_everything_and_checks_settings(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with PrivacyLedger(path, epsilon_budget=5.0, delta=1e-6) as ledger:
        ledger.spend(ROUND)
    again = PrivacyLedger.open(path)
    assert (again.epsilon_budget, again.delta, len(again)) == (5.0, 1e-6, 1)
    with pytest.raises(LedgerError, match=r"created with other settings \(epsilon_budget\)"):
        PrivacyLedger(path, epsilon_budget=6.0, delta=1e-6)
    with pytest.raises(LedgerError, match=r"no privacy ledger at"):
        PrivacyLedger.open(tmp_path / "missing.db")


def test_tampered_rows_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = PrivacyLedger(path, epsilon_budget=5.0, delta=1e-5)
    ledger.spend(ROUND)
    ledger.spend(ROUND)
    ledger.spend(ROUND)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE spends SET epsilon = epsilon / 2 WHERE round = 3")
    conn.commit()
    with pytest.raises(LedgerError, match=r"round 3: stored epsilon differs"):
        ledger.verify()  # the last round: recomputed by default
    conn.execute("UPDATE spends SET epsilon = epsilon * 2 WHERE round = 3")
    conn.execute("UPDATE spends SET epsilon = epsilon / 2 WHERE round = 2")
    conn.commit()
    ledger.verify()  # a middle round is recomputed only when asked
    with pytest.raises(LedgerError, match=r"round 2: stored epsilon differs"):
        ledger.verify(every_round=True)
    conn.execute("UPDATE spends SET event = '{\"type\":\"gaussian\",\"noise_multiplier\":true}' WHERE round = 1")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match=r"round 1 holds an unreadable event"):
        ledger.verify()
    ledger.close()
    with PrivacyLedger.open(path) as reopened, pytest.raises(LedgerError, match=r"round 1 holds an unreadable event"):
        reopened.spend(ROUND)  # a ledger reads its rows once, when it first needs them


@pytest.mark.parametrize(
    "kwargs,message",
    [({"epsilon_budget": 0.0}, r"epsilon_budget must be in \(0, inf\), got 0.0"),
     ({"delta": 1.0}, r"delta must be in \(0, 1\), got 1.0"),
     ({"accountant": "x"}, r"accountant must be one of \('pld', 'rdp'\), got 'x'")],
)
def test_bad_settings(tmp_path: Path, kwargs, message) -> None:
    args = {"epsilon_budget": 1.0, "delta": 1e-5, **kwargs}
    with pytest.raises(ValueError, match=message):
        PrivacyLedger(tmp_path / "l.db", **args)


# --------------------------------------------------------------------------- real kills
SPENDER = textwrap.dedent(
    """
    import sys
    import dp_accounting as dpa
    from fedcrypt.dp import PrivacyLedger
    from fedcrypt.errors import BudgetExceededError
    ledger = PrivacyLedger(sys.argv[1], epsilon_budget=float(sys.argv[2]), delta=1e-5, accountant="rdp")
    print("READY", flush=True)
    event = dpa.PoissonSampledDpEvent(0.05, dpa.GaussianDpEvent(2.0))
    for _ in range(int(sys.argv[3])):
        try:
            rnd = len(ledger.entries()) + 1
            ledger.spend(event)
            print("ACK", rnd, flush=True)
        except BudgetExceededError:
            print("REFUSED", flush=True)
    """
)


def _spender(path: Path, budget: float, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SPENDER, str(path), str(budget), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def _kill_runs(tmp_path: Path, runs: int, seed: int) -> None:
    """Kill a spending process with SIGKILL at a random moment, ``runs`` times, then check.

    Invariant after every kill: all acknowledged rounds are present, at most one more
    round (in flight, committed but not yet printed) exists, every row decodes and has
    the epsilon of its prefix. The timing seed is not secret.
    """
    timing = random.Random(seed)
    path = tmp_path / "crash.db"
    acked_total = 0
    for _ in range(runs):
        proc = _spender(path, 1000.0, 10_000)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(timing.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("ACK")]
        if acks:
            acked_total = max(acked_total, max(acks))
        ledger = PrivacyLedger(path, epsilon_budget=1000.0, delta=1e-5, accountant="rdp")
        rounds = len(ledger)
        assert acked_total <= rounds <= acked_total + 1
        ledger.verify(every_round=True)
        acked_total = rounds  # the in-flight round, if committed, is now durable too
        ledger.close()
    assert acked_total > 0


def test_kill_9_never_loses_or_halves_a_spend(tmp_path: Path) -> None:
    _kill_runs(tmp_path, runs=10, seed=1)


@pytest.mark.slow
def test_kill_9_many_times(tmp_path: Path) -> None:
    _kill_runs(tmp_path, runs=40, seed=2)


def test_two_processes_cannot_both_spend_the_last_of_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    # A budget that fits exactly 6 rounds.
    eps6 = event_epsilon([ROUND] * 6, 1e-5, "rdp")
    eps7 = event_epsilon([ROUND] * 7, 1e-5, "rdp")
    budget = (eps6 + eps7) / 2
    PrivacyLedger(path, budget, 1e-5, "rdp").close()
    procs = [_spender(path, budget, 8) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    acks = sum(o.count("ACK") for o in outputs)
    refused = sum(o.count("REFUSED") for o in outputs)
    assert acks == 6 and refused == 10
    ledger = PrivacyLedger(path, budget, 1e-5, "rdp")
    assert len(ledger) == 6 and ledger.spent <= budget
    ledger.verify(every_round=True)


def test_a_refused_open_closes_its_connection(tmp_path) -> None:
    """Opening with other settings raises and closes its SQLite connection at once.

    The raised errors are kept alive (their tracebacks reference the half-built ledger),
    so a connection that is not closed explicitly would still hold its file descriptors.
    """
    from fedcrypt.dp import PrivacyLedger
    from fedcrypt.errors import LedgerError

    path = tmp_path / "ledger.db"
    PrivacyLedger(path, epsilon_budget=3.0, delta=1e-5).close()

    def open_files() -> int:
        return sum(1 for fd in os.listdir("/proc/self/fd") if str(tmp_path) in _readlink(fd))

    before = open_files()
    kept = []
    for _ in range(3):
        with pytest.raises(LedgerError) as info:
            PrivacyLedger(path, epsilon_budget=9.0, delta=1e-5)
        kept.append(info)
    assert open_files() == before
    with PrivacyLedger(path, epsilon_budget=3.0, delta=1e-5) as ledger:
        assert ledger.spent == 0.0


def _readlink(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# --------------------------------------------------------------------------- incremental composition
MIXED = [
    dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.5)),
    dpa.GaussianDpEvent(4.0),
    dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.05, dpa.GaussianDpEvent(1.1)), 3),
    dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.5)),
    dpa.LaplaceDpEvent(40.0),
    dpa.ComposedDpEvent([dpa.GaussianDpEvent(6.0), dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.5))]),
]


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_every_spend_equals_a_from_scratch_composition(tmp_path: Path, accountant: str) -> None:
    """The cached composition gives the epsilon of composing every event from scratch,
    exactly, also when another process (here: another ledger object) spent in between."""
    path = tmp_path / "inc.db"
    events = MIXED if accountant == "pld" else MIXED[:4] + MIXED[5:]  # RDP has no Laplace
    mine = PrivacyLedger(path, epsilon_budget=100.0, delta=1e-5, accountant=accountant)
    other = PrivacyLedger.open(path)
    for k, event in enumerate(events, start=1):
        spent = (other if k == 3 else mine).spend(event)
        assert spent == event_epsilon(events[:k], 1e-5, accountant)
    assert mine.spent == other.spent == event_epsilon(events, 1e-5, accountant)
    assert [entry.epsilon for entry in mine.entries()] == [event_epsilon(events[:k], 1e-5, accountant)
                                                            for k in range(1, len(events) + 1)]
    mine.verify(every_round=True)
    mine.close()
    other.close()


def test_composition_is_the_multiset_of_leaves() -> None:
    from fedcrypt.dp.accounting import Composition

    composition = Composition.of(MIXED[:3])
    grown = composition.copy()
    grown.compose(MIXED[3])
    assert composition.epsilon(1e-5) == event_epsilon(MIXED[:3], 1e-5)  # the copy did not share state
    assert grown.epsilon(1e-5) == event_epsilon(MIXED[:4], 1e-5)
    assert len(grown) == 3  # q=0.1 z=1.5 twice is one leaf counted twice
    with pytest.raises(TypeError, match="event must be a dp_accounting DpEvent, got str"):
        grown.compose("gaussian")  # type: ignore[arg-type]


def test_cached_pld_path_matches_dp_accountings_pld_accountant() -> None:
    """The ledger's PLD composition (cached single-event PLDs) is what dp-accounting's own
    PLDAccountant returns for the same leaves and interval, bit for bit."""
    from fedcrypt.dp.accounting import _pld_epsilon

    rest = [(dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.5)), 7), (dpa.LaplaceDpEvent(40.0), 2),
            (dpa.PoissonSampledDpEvent(0.2, dpa.LaplaceDpEvent(30.0)), 3)]
    for interval in (1e-4, 3e-4):
        acc = dpa.pld.PLDAccountant(value_discretization_interval=interval)
        acc.compose(dpa.GaussianDpEvent(2.5))
        for leaf, count in rest:
            acc.compose(leaf, count)
        assert _pld_epsilon(2.5**-2, rest, interval, 1e-5) == acc.get_epsilon(1e-5)
        assert _pld_epsilon(2.5**-2, rest, interval, 1e-5) == acc.get_epsilon(1e-5)  # from the cache


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
@pytest.mark.parametrize("noiseless", [dpa.LaplaceDpEvent(0), dpa.LaplaceDpEvent(0.0), dpa.GaussianDpEvent(0)], ids=str)
def test_a_noiseless_release_has_infinite_epsilon(accountant: str, noiseless) -> None:
    # a Laplace event of scale 0 used to raise ZeroDivisionError inside both accountants
    assert event_epsilon([noiseless], 1e-5, accountant) == float("inf")
    assert event_epsilon([dpa.GaussianDpEvent(2.0), noiseless, dpa.LaplaceDpEvent(3.0)], 1e-5, accountant) == float("inf")
    assert event_epsilon([dpa.LaplaceDpEvent(3.0)], 1e-5, accountant) < float("inf")  # control


def test_a_ledger_refuses_a_noiseless_release(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", epsilon_budget=10.0, delta=1e-5)
    ledger.spend(dpa.LaplaceDpEvent(5.0))
    with pytest.raises(BudgetExceededError):
        ledger.spend(dpa.LaplaceDpEvent(0))
    assert len(ledger) == 1
