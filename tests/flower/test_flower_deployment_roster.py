"""SecAgg with a roster (the malicious-server mode) in a real Flower deployment on 127.0.0.1.

A SuperLink and three SuperNodes run as real processes (``LoopbackFederation``); every
SuperNode holds its own identity key file and the federation's roster, pinned by digest
(node config ``fedcrypt-identity``, ``fedcrypt-roster``, ``fedcrypt-roster-digest``); the
ServerApp of ``_roster_app`` runs Flower's FedAvg on a ``SecAggGrid`` whose workflow holds
the roster, so the round has ``verify_survivors=True`` (signed adverts, the consistency
round). n = 3 with threshold 0.6 gives t = 2 and a consistency quorum of 2: one node may drop.

* A SuperNode killed after key sharing (its node holds the MASKED_INPUT request, before it
  trains or uploads): the round finishes with the other two, and the model is their
  plaintext FedAvg within the codec's documented error.
* A server that substitutes one advertised key in the directory it relays to client 0 (the
  ``swap-key`` ServerApp: ``KeySwapGrid``, the in-process key-substitution test's tamper
  on a real grid): that node refuses with ``InvalidSignature`` before it shares anything;
  its only reply is Flower's error reply.

Every process is started and stopped by the ``federation`` fixture (stopped in ``finally``);
everything binds 127.0.0.1. Marked slow: about a minute each on two cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from fedcrypt.identity import NodeIdentity, Roster
from fedcrypt.integrations.flower import NODE_IDENTITY, NODE_ROSTER, NODE_ROSTER_DIGEST, SecAggWorkflow

from ._loopback import LoopbackFederation

pytestmark = [pytest.mark.slow, pytest.mark.flower]

APP = Path(__file__).resolve().parent / "_roster_app"
sys.path.insert(0, str(APP))

from roster_deploy_app.client_app import update_of, weight_of  # noqa: E402  (what each partition trains)

NODES, SIZE, THRESHOLD, CLIP, MAX_WEIGHT = 3, 64, 0.6, 4.0, 100.0
# Seconds the ServerApp waits for one stage's replies. A stage ends as soon as every node has
# answered, so the long wait costs nothing while all nodes live (they answer in about 6 s on two
# idle cores, up to about 17 s on two busy ones); the stage the killed node never answers
# (MASKED_INPUT) lasts its whole timeout, so that one is shorter.
STAGE_TIMEOUT, KILLED_STAGE_TIMEOUT = 40.0, 20.0


def plaintext_fedavg(partitions: list[int]) -> np.ndarray:
    """One round of FedAvg from the zero model, in float64."""
    weights = np.array([weight_of(p) for p in partitions], dtype=np.float64)
    return sum(w * update_of(p, SIZE).astype(np.float64) for w, p in zip(weights, partitions)) / weights.sum()


def fedavg_bound(workflow: SecAggWorkflow, partitions: list[int], magnitude: float = 1.0) -> float:
    """The worst-case error of the round's ``sum(w x) / sum(w)`` from the codec's documented one.

    The round's codec is the one of ``config_for(NODES)`` (all sampled nodes); its decoded sum
    of ``s`` survivors errs by at most ``E = codec.error_bound(s)`` per coordinate, in the
    weighted coordinates ``w/M x`` and in the weight coordinate ``w/M`` alike. With
    ``W = sum(w/M)`` and ``|x| <= magnitude`` (``S <= W magnitude``):
    ``|(S + e1)/(W + e2) - S/W| <= E (W + S) / (W (W - E))`` (the bound of
    tests/flower/test_flower_adapter.fedavg_tolerance); then the float64 division and the cast
    of the average to the float32 model round it once each (unit roundoffs 2^-53 and 2^-24).
    """
    e = workflow.config_for(NODES).codec.error_bound(len(partitions))
    w = sum(weight_of(p) for p in partitions) / MAX_WEIGHT
    s = w * magnitude
    codec = e * (w + s) / (w * (w - e))
    return codec + (magnitude + codec) * (2.0**-24 + 2.0**-53)


def reference_workflow(roster: Roster) -> SecAggWorkflow:
    """The ServerApp's workflow settings (for its config and bound)."""
    return SecAggWorkflow(threshold=THRESHOLD, clip=CLIP, max_weight=MAX_WEIGHT, roster=roster)


@pytest.fixture
def credentials(tmp_path: Path) -> tuple[Roster, dict[int, dict[str, Any]]]:
    """One identity per partition, the roster of all three, and each SuperNode's node config."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    identities = {p: NodeIdentity.generate() for p in range(NODES)}
    roster = Roster({f"node-{p}": identity.public_bytes for p, identity in identities.items()})
    roster.save(folder / "roster.txt")
    node_config = {}
    for p, identity in identities.items():
        identity.save(folder / f"node-{p}.pem")
        node_config[p] = {NODE_IDENTITY: str(folder / f"node-{p}.pem"), NODE_ROSTER: str(folder / "roster.txt"),
                          NODE_ROSTER_DIGEST: roster.digest().hex()}
    return roster, node_config


@pytest.fixture
def federation(tmp_path: Path, credentials) -> Iterator[LoopbackFederation]:
    """The SuperLink and 3 SuperNodes (each with its credentials) on 127.0.0.1; every process
    it started is stopped when the test ends, failed or not (a failed start included)."""
    fed = LoopbackFederation(NODES, workdir=tmp_path / "fed", node_config=credentials[1])
    try:
        fed.start()
        yield fed
    finally:
        fed.close()


def run_config(tmp_path: Path, roster: Roster, **extra: Any) -> dict[str, Any]:
    config = {
        "min-nodes": NODES, "stage-timeout": STAGE_TIMEOUT, "model-size": SIZE, "secagg-threshold": THRESHOLD,
        "secagg-clip": CLIP, "secagg-max-weight": MAX_WEIGHT, "roster-path": str(tmp_path / "credentials" / "roster.txt"),
        "roster-digest": roster.digest().hex(), "result-path": str(tmp_path / "result.json"), "train-timeout": STAGE_TIMEOUT,
    }
    config.update(extra)
    return config


def shown(summary: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in summary.items() if k != "arrays"})[:3000]


def wait_for_file(fed: LoopbackFederation, run_id: int, path: Path, timeout: float, what: str) -> None:
    """Wait until ``path`` exists, looking at the run's status only every few seconds (each
    look is a ``flwr`` command: a Python process that competes with the federation for CPU)."""
    deadline, look = time.monotonic() + timeout, time.monotonic() + 15.0
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout}s:\n{fed.run_log(run_id)[-4000:]}"
        if time.monotonic() >= look:
            finished = fed.status(run_id).startswith("finished")
            assert not finished or path.exists(), f"the run ended before {what}:\n{fed.run_log(run_id)[-4000:]}"
            look = time.monotonic() + 15.0
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_roster_deployment_survives_a_supernode_killed_after_key_sharing(tmp_path: Path, credentials, federation, record_property) -> None:
    roster, fed, marker = credentials[0], federation, tmp_path / "victim-holds-masked-input"
    config = run_config(tmp_path, roster, **{"kill-partition": 2, "kill-stage": "MASKED_INPUT", "kill-marker": str(marker),
                                             "train-timeout": KILLED_STAGE_TIMEOUT})
    run_id = fed.submit(APP, config)
    wait_for_file(fed, run_id, marker, 120, "the victim's MASKED_INPUT")
    # partition 2 has advertised its signed keys and sent its key shares (SHARE_KEYS); it now
    # holds the MASKED_INPUT request and has neither trained nor uploaded: SIGKILL its SuperNode
    # (and its ClientApp process)
    fed.kill_supernode(2)
    wait_for_file(fed, run_id, tmp_path / "result.json", 120, "the ServerApp's summary")
    outcome = fed.wait(run_id, timeout=30)
    assert outcome.completed, fed.run_log(run_id)[-4000:]
    assert fed.supernodes[0].poll() is None and fed.supernodes[1].poll() is None
    summary = json.loads((tmp_path / "result.json").read_text())
    (report,) = summary["rounds"]
    settings = summary["config"]
    assert settings["verify_survivors"] is True and settings["threat_model"] == "malicious-server", shown(summary)
    assert (settings["threshold"], settings["consistency_quorum"]) == (2, 2), shown(summary)
    assert report["aborted"] is None, shown(summary)
    assert {"IDENTIFY", "SHARE_KEYS", "MASKED_INPUT", "CONSISTENCY_CHECK", "UNMASK"} <= set(report["stage_seconds"])
    assert list(report["dropped"].values()) == ["MASKED_INPUT"], shown(summary)
    (victim,) = report["dropped"]
    assert len(report["nodes"]) == NODES and len(report["survivors"]) == 2 and int(victim) not in report["survivors"]
    # the survivors' plaintext FedAvg (partitions 0 and 1) within the codec's documented error
    got = np.asarray(summary["arrays"]["w"], dtype=np.float64)
    bound = fedavg_bound(reference_workflow(roster), [0, 1])
    error = float(np.max(np.abs(got - plaintext_fedavg([0, 1]))))
    record_property("max_error", error), record_property("bound", bound)
    assert error <= bound, f"max error {error:.3e} > bound {bound:.3e}"
    # and the killed node's update is really out: the average with it is far off
    assert float(np.max(np.abs(got - plaintext_fedavg([0, 1, 2])))) > 1000 * bound


@pytest.mark.timeout(300)
def test_a_roster_deployment_refuses_a_server_that_swaps_an_advertised_key(tmp_path: Path, credentials, federation, record_property) -> None:
    roster, fed = credentials[0], federation
    run_id = fed.submit(APP, run_config(tmp_path, roster, attack="swap-key"))
    wait_for_file(fed, run_id, tmp_path / "result.json", 150, "the ServerApp's summary")
    outcome = fed.wait(run_id, timeout=30)
    # the deviation ends no process and no run: the attacked node refuses, the others finish
    assert outcome.completed, fed.run_log(run_id)[-4000:]
    assert all(proc.poll() is None for proc in fed.supernodes.values())
    summary = json.loads((tmp_path / "result.json").read_text())
    (report,) = summary["rounds"]
    attack = summary["attack"]
    assert summary["config"]["verify_survivors"] is True, shown(summary)
    assert attack["tampered"] == 1 and attack["victim"] is not None, shown(summary)
    victim = str(attack["victim"])
    # the node shown the substituted key refused with the typed error before it shared anything:
    # its one reply after the forged directory is Flower's error reply (no record, no share)
    (reply,) = attack["victim_replies"]
    assert reply["error"] is not None and "fedcrypt.errors.InvalidSignature" in reply["error"], shown(summary)
    assert reply["stage"] is None and reply["payload_bytes"] == 0, shown(summary)
    assert report["dropped"] == {victim: "SHARE_KEYS"}, shown(summary)
    assert "InvalidSignature" in report["refused"][victim], shown(summary)
    assert report["aborted"] is None and len(report["survivors"]) == 2 and int(victim) not in report["survivors"]
    # the refusing SuperNode is the one whose log holds its ClientApp's InvalidSignature
    refusing = [p for p in range(NODES) if "InvalidSignature" in fed.log_tail(f"supernode-{p}", chars=1_000_000)]
    assert len(refusing) == 1, refusing
    # the two others' round is whole: their plaintext FedAvg within the codec's documented error
    others = [p for p in range(NODES) if p not in refusing]
    got = np.asarray(summary["arrays"]["w"], dtype=np.float64)
    bound = fedavg_bound(reference_workflow(roster), others)
    error = float(np.max(np.abs(got - plaintext_fedavg(others))))
    record_property("max_error", error), record_property("bound", bound)
    assert error <= bound, f"max error {error:.3e} > bound {bound:.3e}"
