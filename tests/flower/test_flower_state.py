"""Secrets at rest: what the mods keep in Flower's ``Context.state`` is sealed under a node-local key.

The sealing itself (AES-256-GCM, the associated data naming record, run and node, the key
id), where the node's key comes from (a key file in node config, the identity key, the
default key file under ``FLWR_HOME``), and the SecAgg mod over real Flower messages:
a swapped, tampered or foreign record is refused before the node releases anything.
"""

from __future__ import annotations

import os
import pickle
import stat
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.crypto import Secret
from fedcrypt.errors import DecryptionError, IdentityError, MalformedMessageError
from fedcrypt.identity import NodeIdentity, StateKey
from fedcrypt.integrations.flower._state import NODE_IDENTITY, NODE_STATE_KEY, default_state_key_path, node_state_key
from fedcrypt.integrations.flower import RECORD, STATE, SecAggWorkflow, kept_stage, secagg_mod
from fedcrypt.secagg import Stage

from ._inprocess import InProcessGrid
from .test_flower_adapter import fedavg_tolerance, make_app, plaintext_fedavg, run_rounds, weight_of

pytestmark = pytest.mark.filterwarnings("ignore::fedcrypt.errors.HonestButCuriousWarning")

WHERE = {"record": "fedcrypt.secagg.state", "run_id": 7, "node_id": 11}


def context(**node_config) -> SimpleNamespace:
    return SimpleNamespace(node_config=node_config, run_id=7, node_id=11)


@pytest.fixture
def key(tmp_path) -> StateKey:
    return StateKey.from_file(tmp_path / "state.key")


# ============================================================================ sealing
def test_a_sealed_record_opens_only_where_it_was_written(key: StateKey) -> None:
    state = b"\x01secret state \xff" * 3
    sealed = key.seal(state, **WHERE)
    assert key.open(sealed, **WHERE) == state
    assert state not in sealed and key.seal(state, **WHERE) != sealed  # fresh nonce every time
    assert sealed[:4] == b"FCSL" and sealed[4] == 1 and sealed[5:13] == key.key_id
    for moved in ({"record": "fedcrypt.ckks.state"}, {"run_id": 8}, {"node_id": 12}):
        with pytest.raises(DecryptionError, match="moved from another record, run or node"):
            key.open(sealed, **{**WHERE, **moved})


def test_another_key_is_told_apart_from_tampering(key: StateKey, tmp_path) -> None:
    sealed = key.seal(b"state", **WHERE)
    other = StateKey.from_file(tmp_path / "other.key")
    assert other.key_id != key.key_id
    with pytest.raises(DecryptionError, match="another state key"):
        other.open(sealed, **WHERE)
    forged_id = sealed[:5] + other.key_id + sealed[13:]  # the key id is authenticated too
    with pytest.raises(DecryptionError, match="tampered"):
        other.open(forged_id, **WHERE)


def test_versions_and_garbage_are_typed(key: StateKey) -> None:
    sealed = key.seal(b"state", **WHERE)
    with pytest.raises(MalformedMessageError, match="unsupported version 2"):
        key.open(sealed[:4] + b"\x02" + sealed[5:], **WHERE)
    with pytest.raises(MalformedMessageError, match="bad magic"):
        key.open(b"FCSA" + sealed[4:], **WHERE)
    with pytest.raises(MalformedMessageError):
        key.open("text", **WHERE)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 8 * 57 - 1), cut=st.integers(0, 56), extra=st.binary(min_size=1, max_size=8))
def test_any_change_to_a_sealed_record_is_refused(position: int, cut: int, extra: bytes) -> None:
    key = StateKey(Secret(b"k" * 32), "file")
    sealed = key.seal(b"sixteen byte st.", **WHERE)  # 13 + 12 + 16 + 16 = 57 bytes
    flipped = bytearray(sealed)
    assert len(sealed) == 57
    flipped[position // 8] ^= 1 << (position % 8)
    for bad in (bytes(flipped), sealed[:cut], sealed + extra):
        with pytest.raises((DecryptionError, MalformedMessageError)):
            key.open(bad, **WHERE)


def test_the_key_never_prints_or_pickles(key: StateKey, tmp_path) -> None:
    material = (tmp_path / "state.key").read_bytes()
    for text in (repr(key), str(key)):
        assert material.hex() not in text and key.source in text
    with pytest.raises(TypeError):
        pickle.dumps(key)


# ============================================================================ the node's key
def test_a_key_file_named_in_node_config_is_created_owner_only_and_reused(tmp_path) -> None:
    path = tmp_path / "keys" / "node.key"
    first = node_state_key(context(**{NODE_STATE_KEY: str(path)}))
    assert first.source == "file" and len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = node_state_key(context(**{NODE_STATE_KEY: str(path)}))  # the next message's process
    assert again.key_id == first.key_id
    assert again.open(first.seal(b"state", **WHERE), **WHERE) == b"state"
    # the mod's argument is used when node config names no file, and node config wins
    assert node_state_key(context(), key_path=str(path)).key_id == first.key_id
    other = tmp_path / "other.key"
    assert node_state_key(context(**{NODE_STATE_KEY: str(other)}), key_path=str(path)).key_id != first.key_id


def test_bad_key_files_and_settings_are_refused(tmp_path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    with pytest.raises(IdentityError, match="exactly 32 bytes"):
        node_state_key(context(**{NODE_STATE_KEY: str(short)}))
    with pytest.raises(IdentityError, match="must be a string"):
        node_state_key(context(**{NODE_STATE_KEY: 5}))
    with pytest.raises(IdentityError, match="cannot read or create"):
        StateKey.from_file(tmp_path / "absent.key", create=False)


def test_the_identity_key_derives_the_state_key(tmp_path) -> None:
    identity = NodeIdentity.generate()
    path = tmp_path / "identity.pem"
    identity.save(path)
    derived = node_state_key(context(**{NODE_IDENTITY: str(path)}))
    assert derived.source == "identity"
    assert derived.key_id == StateKey.from_identity(NodeIdentity.load(path)).key_id
    assert derived.key_id != StateKey.from_identity(NodeIdentity.generate()).key_id
    sealed = derived.seal(b"state", **WHERE)
    assert identity.signing_key.private_bytes().reveal() not in sealed
    assert node_state_key(context(), identity_path=str(path)).open(sealed, **WHERE) == b"state"
    # a key file, when named, takes precedence over the identity
    named = node_state_key(context(**{NODE_IDENTITY: str(path), NODE_STATE_KEY: str(tmp_path / "k")}))
    assert named.source == "file"


def test_without_configuration_the_default_key_file_under_flower_home_is_shared(tmp_path, monkeypatch) -> None:
    """No key file and no identity: every process of this machine and user shares the default
    key file (created on first use), so the state survives a fresh ClientApp process and a
    SuperNode restart; another machine (another Flower home) cannot open it."""
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    path = default_state_key_path()
    assert path == tmp_path / "flwr" / "fedcrypt" / "state.key" and not path.exists()
    first = node_state_key(context())
    assert first.source == "default-file" and path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = first.seal(b"state", **WHERE)
    assert node_state_key(context()).open(sealed, **WHERE) == b"state"  # a later process
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(DecryptionError, match="another state key"):
        node_state_key(context()).open(sealed, **WHERE)
    monkeypatch.delenv("FLWR_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_key_path() == tmp_path / "home" / ".flwr" / "fedcrypt" / "state.key"


# ============================================================================ through the mod
def keyed_grid(tmp_path, num_nodes: int, **kwargs) -> InProcessGrid:
    """An in-process grid whose nodes name their own key files in node config."""
    grid = InProcessGrid(make_app([secagg_mod]), num_nodes, {}, **kwargs)
    for i, node in enumerate(grid.node_ids):
        grid.contexts[node].node_config[NODE_STATE_KEY] = str(tmp_path / f"node-{i}.key")
    return grid


def test_a_round_keeps_only_sealed_records_and_equals_plaintext_fedavg(tmp_path) -> None:
    seen: list[set[str]] = []

    def fault(node, request):
        if STATE in grid.contexts[node].state.keys():
            record = grid.contexts[node].state[STATE]
            seen.append(set(record.keys()))
            assert kept_stage(grid.contexts[node]) is Stage[request.content[RECORD]["stage"]]
        return None

    grid = keyed_grid(tmp_path, 3, fault=fault)
    workflow = SecAggWorkflow(clip=8.0)
    result = run_rounds(grid, workflow, rounds=1)
    expected, _ = plaintext_fedavg([[0, 1, 2]])
    tol = fedavg_tolerance(workflow, 3, [weight_of(p) for p in range(3)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
    assert seen and all(fields == {"sealed", "stage"} for fields in seen)
    assert all(os.path.exists(tmp_path / f"node-{i}.key") for i in range(3))


def _at(stage: Stage, action):
    def fault(node, request):
        if request.content[RECORD]["stage"] == stage.name and request.metadata.group_id == "1":
            action(node)
        return None

    return fault


def test_swapped_sealed_states_are_refused_and_release_nothing(tmp_path) -> None:
    """Two nodes' records swapped before the masked input (even under one shared key file):
    both nodes refuse, so neither uploads a masked input and the round cannot finish."""
    swapped: list[int] = []

    def swap(node):
        if swapped:
            return
        a, b = grid.node_ids[0], grid.node_ids[1]
        ctx_a, ctx_b = grid.contexts[a], grid.contexts[b]
        ctx_a.state[STATE], ctx_b.state[STATE] = ctx_b.state[STATE], ctx_a.state[STATE]
        swapped.extend([a, b])

    grid = keyed_grid(tmp_path, 3, fault=_at(Stage.MASKED_INPUT, swap))
    for node in grid.node_ids:
        grid.contexts[node].node_config[NODE_STATE_KEY] = str(tmp_path / "shared.key")
    workflow = SecAggWorkflow()
    run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    assert report.aborted is not None and report.survivors == []
    for node in swapped:
        assert report.dropped[node] == "MASKED_INPUT"
        assert "DecryptionError" in report.refused[node] and "moved from another record, run or node" in report.refused[node]
    assert sum("DecryptionError" in error for error in grid.errors) == 2


def test_a_tampered_sealed_state_is_refused_and_the_others_finish(tmp_path) -> None:
    def tamper(node):
        if node == grid.node_ids[0]:
            record = grid.contexts[node].state[STATE]
            sealed = bytearray(record["sealed"])
            sealed[-1] ^= 1
            record["sealed"] = bytes(sealed)

    grid = keyed_grid(tmp_path, 4, fault=_at(Stage.SHARE_KEYS, tamper))
    workflow = SecAggWorkflow(clip=8.0)
    result = run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    victim = grid.node_ids[0]
    assert report.dropped == {victim: "SHARE_KEYS"} and "tampered" in report.refused[victim]
    expected, _ = plaintext_fedavg([[1, 2, 3]])
    tol = fedavg_tolerance(workflow, 3, [weight_of(p) for p in (1, 2, 3)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)


def test_a_node_whose_key_changed_mid_round_says_so(tmp_path) -> None:
    def rekey(node):
        if node == grid.node_ids[2]:
            grid.contexts[node].node_config[NODE_STATE_KEY] = str(tmp_path / "new.key")

    grid = keyed_grid(tmp_path, 3, fault=_at(Stage.SHARE_KEYS, rekey))
    workflow = SecAggWorkflow()
    run_rounds(grid, workflow, rounds=1)
    assert "another state key" in workflow.reports[0].refused[grid.node_ids[2]]
