"""A privacy-ledger writer killed with SIGKILL at random points, many times.

A child process opens the ledger and spends one Gaussian event after another, printing
``ACK <round> <epsilon>`` (flushed) only after :meth:`PrivacyLedger.spend` returned. The
parent kills it with SIGKILL after a random delay (anywhere from interpreter start-up to
the middle of a spend), restarts it, and repeats until the budget is full. After every
kill the parent reopens the ledger and checks:

* no acknowledged spend is lost: the ledger holds at least as many rounds as the highest
  round ever acknowledged, and the acknowledged epsilon of that round is the recorded one;
* never over budget: ``spent <= epsilon_budget`` and :meth:`verify` passes (every row
  decodes and its stored epsilon is the recomputed one);
* the writer finally stops with BudgetExceededError, and one more spend is still refused.

The kill delays come from a seeded ``random.Random`` (timing, not secrets).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._report import record

pytest.importorskip("dp_accounting")

BUDGET, DELTA, SIGMA = 3.0, 1e-5, 10.0

WRITER = f"""
import sys
import dp_accounting
from fedcrypt.dp import PrivacyLedger
from fedcrypt.errors import BudgetExceededError
ledger = PrivacyLedger(sys.argv[1], float(sys.argv[2]), {DELTA!r})
while True:
    try:
        epsilon = ledger.spend(dp_accounting.GaussianDpEvent({SIGMA!r}))
    except BudgetExceededError:
        print("FULL", flush=True)
        break
    print("ACK", len(ledger), repr(epsilon), flush=True)
"""


def kill_until_full(path: Path, kills: int, seed: int, budget: float = BUDGET) -> dict:
    from fedcrypt.dp import PrivacyLedger

    rng = random.Random(seed)  # kill timing only
    acknowledged: dict[int, float] = {}
    done_kills = 0
    full = False
    while not full:
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), repr(budget)], stdout=subprocess.PIPE, text=True)
        if done_kills < kills:
            time.sleep(rng.uniform(0.0, 2.0))
            child.send_signal(signal.SIGKILL)
            done_kills += 1
        out, _ = child.communicate(timeout=300)
        for line in out.splitlines():
            if line.startswith("ACK"):
                _, rnd, eps = line.split()
                acknowledged[int(rnd)] = float(eps)
            full = full or line == "FULL"
        if child.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"writer exited with {child.returncode}")
        if not path.exists():
            continue  # killed before it created the file
        with PrivacyLedger.open(path) as ledger:
            entries = ledger.entries()
            if acknowledged:
                top = max(acknowledged)
                assert len(entries) >= top, f"acknowledged round {top} lost ({len(entries)} recorded)"
                for rnd, eps in acknowledged.items():
                    assert entries[rnd - 1].epsilon == pytest.approx(eps, rel=1e-9)
            ledger.verify()
            assert ledger.spent <= budget
    with PrivacyLedger.open(path) as ledger:
        import dp_accounting

        from fedcrypt.errors import BudgetExceededError

        before = len(ledger)
        with pytest.raises(BudgetExceededError):
            ledger.spend(dp_accounting.GaussianDpEvent(SIGMA))
        assert len(ledger) == before and ledger.spent <= budget
        return {"kills": done_kills, "rounds": before, "acknowledged": len(acknowledged), "spent": ledger.spent}


@pytest.mark.timeout(240)
def test_writer_killed_a_few_times_loses_nothing(tmp_path: Path) -> None:
    outcome = kill_until_full(tmp_path / "ledger.sqlite", kills=2, seed=1, budget=1.2)
    assert outcome["kills"] == 2 and outcome["rounds"] >= outcome["acknowledged"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_writer_killed_many_times_loses_nothing_and_never_overspends(tmp_path: Path) -> None:
    """40 kills in all: when a ledger fills up before, the next kills go to a fresh ledger."""
    total = {"kills": 0, "rounds": 0, "acknowledged": 0, "ledgers": 0, "max_spent": 0.0}
    while total["kills"] < 40:
        outcome = kill_until_full(tmp_path / f"ledger-{total['ledgers']}.sqlite", kills=40 - total["kills"],
                                  seed=2 + total["ledgers"])
        assert outcome["rounds"] >= outcome["acknowledged"] > 0
        total["ledgers"] += 1
        for key in ("kills", "rounds", "acknowledged"):
            total[key] += outcome[key]
        total["max_spent"] = max(total["max_spent"], outcome["spent"])
    record("ledger.sigkill", **total)
    assert total["kills"] == 40 and total["max_spent"] <= BUDGET
