"""Linear state: each sealed state a Flower mod keeps answers one message (the node-local journal).

Flower's simulation runtime can run two messages for one node from one ``Context.state``
snapshot, and a SuperNode's ClientApp process pushes its reply before its Context, so a late
or lost write-back hands the next message an older snapshot. A mod therefore spends the sealed
record it replaces in a node-local journal before its reply leaves
(:func:`fedcrypt.integrations.flower._state.spend`). Here: the journal's rules (one answer per
sealed state, atomic across threads and processes, empty entries named by a hash, one folder
per run), a SecAgg round that spends every state it answers from, a restarted node that still
refuses a second unmask answer from an old snapshot, a CKKS decryptor that refuses to decrypt
another aggregate from its old snapshot, and the positive controls: without the journal, the
old snapshot answers again. The attack itself is
``tests/adversarial/review3/test_flower_concurrent_state.py``.
"""

from __future__ import annotations

import copy
import re
import stat
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedcrypt.errors import IdentityError, MalformedMessageError, UnexpectedMessageError
from fedcrypt.integrations.flower import RECORD, STATE, SecAggMod, SecAggWorkflow
from fedcrypt.integrations.flower._state import NODE_JOURNAL, NODE_STATE_KEY, spend
from fedcrypt.secagg import Stage, UnmaskRequest, UnmaskShares, decode_message

from ._inprocess import RUN_ID, InProcessGrid, wire
from .test_flower_adapter import initial, make_app, run_rounds

pytestmark = pytest.mark.filterwarnings("ignore::fedcrypt.errors.HonestButCuriousWarning")

SPENT = "answered a message already"


def entries(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def holder(tmp_path, sealed: bytes = b"sealed state 1", run_id: int = 7, journal: str = "journal") -> SimpleNamespace:
    """A Context stand-in whose record ``r`` holds ``sealed``."""
    state = RecordDict({"r": ConfigRecord({"sealed": sealed})})
    return SimpleNamespace(node_config={NODE_JOURNAL: str(tmp_path / journal)}, run_id=run_id, node_id=11, state=state)


# ============================================================================ the journal
def test_a_sealed_state_is_spent_once_with_an_empty_entry_per_run(tmp_path) -> None:
    spend(holder(tmp_path), "r")
    with pytest.raises(UnexpectedMessageError, match=SPENT):
        spend(holder(tmp_path), "r")  # another process with the same snapshot: the same journal
    spend(holder(tmp_path, b"sealed state 2"), "r")  # the next state
    spend(holder(tmp_path, run_id=8), "r")  # another run, another folder
    empty = holder(tmp_path)
    del empty.state["r"]
    spend(empty, "r")  # nothing kept yet: nothing to spend
    found = entries(tmp_path / "journal")
    assert [p.parent.name for p in found].count("7") == 2 and [p.parent.name for p in found].count("8") == 1
    assert all(p.stat().st_size == 0 and re.fullmatch("[0-9a-f]{64}", p.name) for p in found)  # a hash, nothing else
    assert stat.S_IMODE((tmp_path / "journal" / "7").stat().st_mode) == 0o700


def test_of_many_concurrent_spenders_of_one_state_exactly_one_answers(tmp_path) -> None:
    barrier, outcomes = threading.Barrier(8), []

    def attempt() -> None:
        barrier.wait()
        try:
            spend(holder(tmp_path), "r")
            outcomes.append("answered")
        except UnexpectedMessageError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["answered"] + ["refused"] * 7


def test_the_default_journal_is_under_flower_home_and_an_unwritable_one_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    unset = holder(tmp_path)
    unset.node_config = {}
    spend(unset, "r")
    assert len(entries(tmp_path / "flwr" / "fedcrypt" / "journal" / "7")) == 1
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(IdentityError, match=f"cannot write the fedcrypt journal .*{NODE_JOURNAL}"):
        spend(holder(tmp_path, journal="a-file"), "r")


# ============================================================================ SecAgg through the mod
def journaled(tmp_path, app, num_nodes: int, fault=None) -> InProcessGrid:
    grid = InProcessGrid(app, num_nodes, {}, fault=fault)
    for i, node in enumerate(grid.node_ids):
        grid.contexts[node].node_config.update({NODE_STATE_KEY: str(tmp_path / f"node-{i}.key"),
                                                NODE_JOURNAL: str(tmp_path / f"journal-{i}")})
    return grid


def restarted(grid: InProcessGrid, node: int, state: RecordDict, mod, **config) -> tuple:
    """A fresh ClientApp (a new process) and Context for ``node``, from a copy of an old ``state``."""
    context = Context(RUN_ID, node, {**grid.contexts[node].node_config, **config}, copy.deepcopy(state), {})
    return make_app([mod]), context


def test_a_round_spends_every_state_it_answers_from_and_a_restarted_node_refuses_an_old_snapshot(tmp_path) -> None:
    """A node answers UNMASK; the same node restarted (a new process, the Flower home kept) and handed
    the Context from before that answer (a write-back that was lost, or a concurrent worker's
    snapshot) refuses the same request, and one that says client 0 dropped; the positive
    control: with the journal lost too, the old snapshot answers that one with client 0's
    mask-key share, after it gave its self-mask share (what the journal stops)."""
    saved: dict[int, tuple[Message, RecordDict]] = {}

    def fault(node, request):
        if request.content[RECORD]["stage"] == Stage.UNMASK.name:
            saved[node] = (wire(request), copy.deepcopy(grid.contexts[node].state))

    grid = journaled(tmp_path, make_app([SecAggMod()]), 4, fault=fault)  # t = 3: three survivors still unmask
    workflow = SecAggWorkflow(clip=8.0)
    run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    assert report.aborted is None and sorted(report.survivors) == sorted(grid.node_ids)
    answered = [stage for stage in report.stage_seconds if stage != Stage.ADVERTISE_KEYS.name]  # the set-up spends nothing
    for i, node in enumerate(grid.node_ids):
        assert len(entries(tmp_path / f"journal-{i}")) == len(answered) and STATE not in grid.contexts[node].state.keys()
    node = sorted(grid.node_ids)[1]  # client 1 (client ids follow node ids)
    request, before = saved[node]
    assert Stage[before[STATE]["stage"]] is Stage.UNMASK
    asked = decode_message(request.content[RECORD]["payload"])  # the other answer: client 0 "dropped" after all
    other = wire(request)
    other.content[RECORD]["payload"] = UnmaskRequest(asked.round_id, asked.recipient, tuple(c for c in asked.survivors if c),
                                                     (0,), asked.signatures, asked.attestations).to_bytes()
    for message in (request, other):
        app, context = restarted(grid, node, before, SecAggMod())
        with pytest.raises(UnexpectedMessageError, match=SPENT):
            app(wire(message), context)
        assert dict(context.state[STATE]) == dict(before[STATE])  # refused before anything changed
    app, context = restarted(grid, node, before, SecAggMod(), **{NODE_JOURNAL: str(tmp_path / "journal-lost")})
    leaked = decode_message(app(wire(other), context).content[RECORD]["payload"])
    assert isinstance(leaked, UnmaskShares) and [owner for owner, _ in leaked.mask_key_shares] == [0]  # client 0's key share


def test_only_an_answer_spends_a_state(tmp_path) -> None:
    """A message the node refuses (here an undecodable payload) leaves the state answerable."""
    saved: dict[int, tuple[Message, RecordDict]] = {}

    def fault(node, request):
        if request.content[RECORD]["stage"] == Stage.UNMASK.name:
            saved[node] = (wire(request), copy.deepcopy(grid.contexts[node].state))

    grid = journaled(tmp_path, make_app([SecAggMod()]), 3, fault=fault)
    run_rounds(grid, SecAggWorkflow(clip=8.0), rounds=1)
    node = grid.node_ids[0]
    request, before = saved[node]
    fresh = {NODE_JOURNAL: str(tmp_path / "fresh")}  # a journal in which this snapshot is unspent
    garbled = wire(request)
    garbled.content[RECORD]["payload"] = b"\x00"
    app, context = restarted(grid, node, before, SecAggMod(), **fresh)
    with pytest.raises(MalformedMessageError):
        app(garbled, context)
    assert not (tmp_path / "fresh").exists()
    assert isinstance(decode_message(app(wire(request), context).content[RECORD]["payload"]), UnmaskShares)
    assert len(entries(tmp_path / "fresh")) == 1


# ============================================================================ CKKS through the mod
def test_a_ckks_decryptor_decrypts_one_aggregate_per_snapshot(tmp_path, monkeypatch) -> None:
    """The CKKS node releases one decryption per upload it made (its state counts them): from an
    old snapshot, a second aggregate (say, the same uploads without a victim's) would be
    decrypted too, and the difference is the victim's update. The journal refuses it; the
    positive control (the journal a no-op) decrypts both."""
    pytest.importorskip("tenseal")
    from fedcrypt.he.round import CkksClient, DecryptRequest, Decryption
    from fedcrypt.integrations.flower import _state
    from fedcrypt.integrations.flower.ckks import CKKS_RECORD, CKKS_STATE, CkksGrid, CkksMod, CkksWorkflow, default_config

    grid = journaled(tmp_path, make_app([CkksMod()]), 3)
    workflow = CkksWorkflow(default_config(decryptors=1))
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    strategy.start(grid=CkksGrid(grid, workflow), initial_arrays=initial(), num_rounds=1, timeout=30)
    assert workflow.reports[0].aborted is None
    node = next(n for n in grid.node_ids if n not in workflow.reports[0].decryptors)  # uploaded once, decrypted nothing
    ctxt = grid.contexts[node]
    client = CkksClient.from_state_bytes(_state.kept(ctxt, _state.node_state_key(ctxt), CKKS_STATE), config=default_config())
    owner, layout = client._owner, client._upload[2]  # the test's privilege: the key, and the layout of the node's upload

    def aggregate(*values: float) -> bytes:
        total = workflow.aggregator.start()
        for value in values:
            total.add(owner.encrypt(np.full(8, value), layout), 1)
        return total.finish()

    def ask(app, context, blob: bytes) -> Message:
        request = DecryptRequest(2, node, blob)
        content = RecordDict({CKKS_RECORD: ConfigRecord({"stage": request.STAGE.name, "payload": request.to_bytes()})})
        return app(wire(Message(content, node, "train", group_id="2")), context)

    before = copy.deepcopy(ctxt.state)
    first = ask(*restarted(grid, node, before, CkksMod()), aggregate(1.0, 2.0, 3.0))
    assert isinstance(decode(first, CKKS_RECORD), Decryption)
    with pytest.raises(UnexpectedMessageError, match=SPENT):
        ask(*restarted(grid, node, before, CkksMod()), aggregate(1.0, 2.0))
    monkeypatch.setattr(_state, "spend", lambda ctxt, record: None)  # positive control
    second = ask(*restarted(grid, node, before, CkksMod()), aggregate(1.0, 2.0))
    assert isinstance(decode(second, CKKS_RECORD), Decryption)


def decode(reply: Message, record: str):
    from fedcrypt.he.round import decode_message as decode_round

    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    return decode_round(reply.content[record]["payload"])
