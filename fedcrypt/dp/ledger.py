"""A durable privacy ledger that cannot overspend, on SQLite in WAL mode.

Invariants:

* ``spend`` validates, then applies: inside one ``BEGIN IMMEDIATE`` transaction it reads
  the rows recorded since it last looked (another process may have spent), computes the
  epsilon the ledger would reach with the new event, and either rolls back with
  :class:`~fedcrypt.errors.BudgetExceededError` (nothing changed) or inserts one row and
  commits. ``BEGIN IMMEDIATE`` takes SQLite's write lock first, so two processes cannot
  both read the same remaining budget and both spend it: the second waits, then sees the
  first one's row.
* A spend costs the same at round 1,000 as at round 1: the ledger keeps the composition
  of its events (:class:`~fedcrypt.dp.accounting.Composition`, the multiset of leaf
  events) and folds in only new rows, and the epsilon of that composition is exactly
  :func:`~fedcrypt.dp.accounting.event_epsilon` of all the events, as if composed from
  scratch.
* A spend is acknowledged (``spend`` returns) only after ``COMMIT`` with
  ``synchronous=FULL`` in WAL mode, i.e. after the WAL frame is fsynced. SQLite's
  transactions are atomic, so a process killed at any point leaves either the whole row
  or none of it; an acknowledged spend is never lost.
* Settings (``epsilon_budget``, ``delta``, ``accountant``) are written once when the
  ledger is created; reopening with other settings raises
  :class:`~fedcrypt.errors.LedgerError`, and so does a row whose event does not decode,
  a gap in the rounds, or (:meth:`PrivacyLedger.verify`) a stored epsilon that disagrees
  with the recomputed one.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from fedcrypt.errors import BudgetExceededError, LedgerError

if TYPE_CHECKING:  # dp_accounting is the optional extra 'dp'
    from dp_accounting import DpEvent

    from fedcrypt.dp.accounting import Accountant, Composition

__all__ = ["PrivacyLedger", "LedgerEntry"]

_SCHEMA_VERSION = "1"
_BUSY_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded spend: its round number (1-based), the event and the epsilon after it."""

    round: int
    event_json: str
    epsilon: float
    recorded_at: float

    @property
    def event(self) -> DpEvent:
        """The dp_accounting event of this round."""
        from fedcrypt.dp.events import event_from_json

        return event_from_json(self.event_json)


def _positive(value: Any, name: str, *, below_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0 and (value < 1 or not below_one)):
        bound = "(0, 1)" if below_one else "(0, inf)"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")
    return value


class PrivacyLedger:
    """Persistent record of every round's DP event, refusing any spend past the budget.

    Math: after rounds ``1..k`` with events ``E_1..E_k`` the ledger's epsilon is that of
    the composition ``E_1 o ... o E_k`` at the ledger's ``delta``
    (:func:`fedcrypt.dp.accounting.event_epsilon`, PLD where dp-accounting supports every
    event, else RDP). A spend is accepted iff that epsilon with the new event is at most
    ``epsilon_budget``.

    Threat model: protects against the *operator's* mistakes and crashes (overspending,
    double spending from two processes, a kill -9 mid-write), not against someone who
    edits the database file: the file is not authenticated.

    Args:
        path: the SQLite file (created if missing).
        epsilon_budget: the total epsilon allowed, ``> 0``.
        delta: the delta at which epsilon is measured, in (0, 1).
        accountant: ``"pld"`` (default) or ``"rdp"``.
    """

    def __init__(self, path: str | os.PathLike[str], epsilon_budget: float, delta: float, accountant: Accountant = "pld") -> None:
        from fedcrypt.dp.accounting import ACCOUNTANTS

        self.epsilon_budget = _positive(epsilon_budget, "epsilon_budget")
        self.delta = _positive(delta, "delta", below_one=True)
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
        self.accountant = accountant
        self.path = Path(path)
        self._composition: Composition | None = None  # the events of rounds 1.._folded
        self._folded = 0
        self._conn = self._connect(self.path)
        try:
            self._init_or_check()
        except BaseException:
            self._conn.close()  # a refused open leaves no connection (and no lock) behind
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "PrivacyLedger":
        """Open an existing ledger with the settings it was created with.

        Raises:
            LedgerError: the file is missing or is not a fedcrypt privacy ledger.
        """
        if not Path(path).is_file():
            raise LedgerError(f"no privacy ledger at {os.fspath(path)!r}")
        conn = cls._connect(Path(path))
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"not a privacy ledger: {exc}") from None
        finally:
            conn.close()
        try:
            return cls(path, float(meta["epsilon_budget"]), float(meta["delta"]), meta["accountant"])
        except (KeyError, ValueError) as exc:
            raise LedgerError(f"privacy ledger settings are unreadable: {exc}") from None

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = None
        try:
            conn = sqlite3.connect(os.fspath(path), timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise LedgerError(f"cannot open the privacy ledger: {exc}") from None
        if str(mode).lower() != "wal":
            conn.close()
            raise LedgerError(f"the privacy ledger could not switch to WAL mode (got {mode!r})")
        return conn

    def _init_or_check(self) -> None:
        settings = {
            "schema_version": _SCHEMA_VERSION,
            "epsilon_budget": repr(self.epsilon_budget),
            "delta": repr(self.delta),
            "accountant": self.accountant,
        }
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS spends ("
                " round INTEGER PRIMARY KEY,"
                " event TEXT NOT NULL,"
                " epsilon REAL NOT NULL,"
                " recorded_at REAL NOT NULL)"
            )
            stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not stored:
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(settings.items()))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise LedgerError(f"not a privacy ledger: {exc}") from None
        if stored and stored != settings:
            differing = sorted(k for k in settings.keys() | stored.keys() if settings.get(k) != stored.get(k))
            raise LedgerError(f"the ledger was created with other settings ({', '.join(differing)})")

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _entries(rows: list[tuple[Any, ...]], first: int) -> list[LedgerEntry]:
        entries = [LedgerEntry(int(r), str(e), float(eps), float(t)) for r, e, eps, t in rows]
        for position, entry in enumerate(entries, start=first):
            if entry.round != position:
                raise LedgerError(f"ledger rounds are not consecutive at round {entry.round}")
        return entries

    def _rows(self, after: int = 0) -> list[LedgerEntry]:
        rows = self._conn.execute("SELECT round, event, epsilon, recorded_at FROM spends WHERE round > ? ORDER BY round", (after,)).fetchall()
        return self._entries(rows, after + 1)

    def entries(self) -> list[LedgerEntry]:
        """Every recorded spend, in order."""
        return self._rows()

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self._rows())

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM spends").fetchone()[0])

    @staticmethod
    def _decoded(entries: list[LedgerEntry]) -> list[DpEvent]:
        from fedcrypt.dp.events import event_from_json

        events = []
        for entry in entries:
            try:
                events.append(event_from_json(entry.event_json))
            except (TypeError, ValueError) as exc:
                raise LedgerError(f"round {entry.round} holds an unreadable event: {exc}") from None
        return events

    def _current(self) -> Composition:
        """The composition of every recorded event: the cached one plus rows since (read only)."""
        from fedcrypt.dp.accounting import Composition

        newest = self._conn.execute("SELECT MAX(round) FROM spends").fetchone()[0] or 0
        if newest < self._folded:
            raise LedgerError(f"the ledger lost rounds: it holds {newest}, {self._folded} were read before")
        composition = self._composition.copy() if self._composition is not None else Composition()
        if newest > self._folded or self._composition is None:
            entries = self._rows(after=self._folded)
            for event in self._decoded(entries):
                composition.compose(event)
            self._composition, self._folded = composition.copy(), self._folded + len(entries)
        return composition

    def _epsilon(self, composition: Composition) -> float:
        return float(composition.epsilon(self.delta, self.accountant))

    @property
    def spent(self) -> float:
        """Epsilon spent so far (the composition of every recorded event)."""
        if len(self) == 0:
            return 0.0
        return self._epsilon(self._current())

    @property
    def remaining(self) -> float:
        """``epsilon_budget - spent`` (never negative)."""
        return max(0.0, self.epsilon_budget - self.spent)

    def verify(self, *, every_round: bool = False, progress: Callable[[int, int], None] | None = None) -> None:
        """Check that every row decodes, the rounds are consecutive, and the stored epsilon
        matches the one recomputed from scratch.

        By default the last round's epsilon (the total spent) is recomputed from all the
        events: one composition, whatever the length of the ledger. ``every_round=True``
        recomputes every round's (one composition per round; minutes for a long ledger
        whose events need dp-accounting's PLD).

        Args:
            every_round: recompute every round's epsilon, not only the last one.
            progress: called as ``progress(done, total)`` after each recomputed round.

        Raises:
            LedgerError: on the first row that does not.
        """
        from fedcrypt.dp.accounting import Composition

        entries = self._rows()
        events = self._decoded(entries)
        checked = range(1, len(entries) + 1) if every_round else range(len(entries), len(entries) + 1)
        composition = Composition()
        for k, event in enumerate(events, start=1):
            composition.compose(event)
            if k not in checked:
                continue
            expected = self._epsilon(composition)
            if not math.isclose(expected, entries[k - 1].epsilon, rel_tol=1e-6, abs_tol=1e-12):
                raise LedgerError(f"round {k}: stored epsilon differs from the recomputed one")
            if progress is not None:
                progress(k if every_round else 1, len(entries) if every_round else 1)

    # ------------------------------------------------------------------ spending
    def spend(self, event: DpEvent) -> float:
        """Record ``event`` if the budget allows it; return the epsilon spent after it.

        Costs one composition of the ledger's events (see the module invariants), not a
        pass over its history.

        Args:
            event: a dp_accounting ``DpEvent`` (see
                :data:`fedcrypt.dp.events.SUPPORTED_EVENTS`).

        Raises:
            BudgetExceededError: the spend would pass ``epsilon_budget``; nothing changed.
            TypeError: an unsupported event type.
            LedgerError: the stored ledger is unreadable.
        """
        from fedcrypt.dp.events import event_to_json

        text = event_to_json(event)  # validates before any lock is taken
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            composition = self._current()
            composition.compose(event)
            after = self._epsilon(composition)
            if not after <= self.epsilon_budget:
                raise BudgetExceededError(
                    f"spending would reach epsilon={after:.6g} at delta={self.delta:g}, past the budget {self.epsilon_budget:g}; nothing was recorded"
                )
            conn.execute(
                "INSERT INTO spends (round, event, epsilon, recorded_at) VALUES (?, ?, ?, ?)",
                (self._folded + 1, text, after, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._composition, self._folded = composition, self._folded + 1
        return after

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> "PrivacyLedger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger({os.fspath(self.path)!r}, epsilon_budget={self.epsilon_budget!r}, delta={self.delta!r}, accountant={self.accountant!r})"
        )
