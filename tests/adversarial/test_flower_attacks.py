"""The malicious server against a real Flower ClientApp with fedcrypt's secagg_mod.

Every message goes through Flower's protobuf serialisation and the mod's record checks,
and the client protocol object lives in the node's ``Context.state`` between stages, as
in a deployment (fedcrypt.integrations.flower.testing.FlowerClients). The Flower adapter carries no
PKI (``verify_survivors`` is refused), so it runs the honest-but-curious configuration.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from fedcrypt.integrations.flower import secagg_mod  # noqa: E402
from fedcrypt.secagg import SecAggConfig, Stage  # noqa: E402
from fedcrypt.testing import (  # noqa: E402
    BothSharesDirect,
    BothSharesSplit,
    InconsistentModels,
    KeySwapMitm,
    MaliciousServer,
    ReplayPreviousRound,
    SplitSurvivorViews,
    WithholdVictimShares,
)
from fedcrypt.integrations.flower.testing import FlowerClients  # noqa: E402

app = ClientApp(mods=[secagg_mod])


@app.train()
def train(msg: Message, context) -> Message:
    """A client 'trains' by moving the global model towards its own partition's target."""
    model = msg.content["arrays"]["w"].numpy()
    update = (model + 0.01 * (int(context.node_config["partition-id"]) + 1)).astype(np.float32)
    content = RecordDict({"arrays": ArrayRecord({"w": Array(update)}), "metrics": MetricRecord({"num-examples": 10})})
    return Message(content=content, reply_to=msg)


def global_model(value: float = 0.0, size: int = 16):
    def content(client_id: int) -> RecordDict:
        arrays = ArrayRecord({"w": Array(np.full(size, value, dtype=np.float32))})
        return RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})

    return content


CONFIG = SecAggConfig(5, 3, clip=4.0)


def clients(round_id: int = 1, content=None) -> FlowerClients:
    return FlowerClients(app, CONFIG, content or global_model(), round_id=round_id)


def test_honest_double_completes_through_the_mod() -> None:
    report = MaliciousServer(clients()).run()
    assert report.completed and not report.refusals and report.defeated


def test_both_shares_in_one_request_is_refused_by_every_node() -> None:
    report = BothSharesDirect(clients(), victim=1).run()
    assert {r.error for r in report.refusals} == {"ProtocolViolationError"}
    assert set(report.refused_by()) == set(range(5)) and report.aborted and report.defeated


def test_second_unmask_request_finds_no_state_and_is_refused() -> None:
    report = BothSharesSplit(clients(), victim=1).run()
    assert {r.error for r in report.refusals} == {"UnexpectedMessageError"}
    assert report.completed and report.defeated


def test_split_survivor_views_reveal_nothing() -> None:
    assert SplitSurvivorViews(clients(), victim=2).run().defeated


def test_withheld_victim_shares_are_refused() -> None:
    report = WithholdVictimShares(clients(), victim=1).run()
    # each other client says in its masked input that it skipped the victim; an honest server
    # that forwarded the victim's shares refuses those inputs and the round aborts
    assert {r.error for r in report.server_refusals} == {"ProtocolViolationError"}
    assert all("skipped" in r.message for r in report.server_refusals)
    assert report.aborted and not report.completed and report.defeated


def test_replayed_previous_round_is_refused_and_changes_nothing() -> None:
    previous = MaliciousServer(clients(round_id=1))
    assert previous.run().completed
    current = clients(round_id=2)
    current.contexts = previous.endpoints.contexts  # the same SuperNodes, a later round
    attack = ReplayPreviousRound(current, previous)
    report = attack.run()
    assert attack.replays_sent and len(report.refusals) == attack.replays_sent
    assert {r.error for r in report.refusals} <= {"UnexpectedMessageError", "ProtocolViolationError", "DecryptionError"}
    assert report.completed


def test_key_swap_is_outside_the_flower_adapters_threat_model() -> None:
    """No PKI in the Flower adapter: a server that relays forged keys unmasks the victim (SECURITY.md)."""
    report = KeySwapMitm(clients(), victim=0).run()
    assert report.recovered == (0,)


def test_different_global_models_to_different_nodes_are_refused() -> None:
    """The model-inconsistency attack (Pasquini et al. CCS 2022): the train records are bound
    into the round (setup field 'model'), so nodes with another model derive another context.

    (Was a strict-xfail bug until the adapter bound the train records; fixed in the adapter.)
    """

    def inconsistent(client_id: int) -> RecordDict:
        return global_model(0.0 if client_id != 3 else 1.0)(client_id)

    # an honest server's own check already leaves node 3 (another context) out of the round
    honest = MaliciousServer(clients(content=inconsistent)).run()
    assert [r.client for r in honest.server_refusals] == [3] and honest.completed
    # a malicious server forwards every advert anyway: then the nodes refuse each other
    report = InconsistentModels(clients(content=inconsistent)).run()
    assert set(report.refused_by()) == set(range(5)) and report.defeated
    assert {r.error for r in report.refusals} == {"ProtocolViolationError"}


def _flower_machine():
    from hypothesis import settings

    from fedcrypt.testing import dropout_state_machine, secagg_configs

    machine = dropout_state_machine(
        lambda config: FlowerClients(app, config, global_model()),
        configs=secagg_configs(min_clients=3, max_clients=5, verify_survivors=False),
    )
    machine.TestCase.settings = settings(max_examples=12, stateful_step_count=30, deadline=None)
    return machine.TestCase


TestFlowerModDropouts = _flower_machine()


def test_replayed_setup_for_a_joined_round_is_refused_and_keeps_the_state() -> None:
    """A replayed setup must not reset a node's protocol state (it would let a server discard
    the shares a node holds, or rerun the same round over another subset of nodes).

    (Was a strict-xfail bug until the adapter kept the joined round; fixed in the adapter.)
    """
    from fedcrypt.errors import UnexpectedMessageError
    from fedcrypt.integrations.flower import STATE, kept_stage

    endpoints = clients()
    first = endpoints.advertise(0)
    kept = endpoints.contexts[0].state[STATE]["sealed"]
    with pytest.raises(UnexpectedMessageError):
        endpoints.advertise(0)
    assert endpoints.contexts[0].state[STATE]["sealed"] == kept
    assert kept_stage(endpoints.contexts[0]) is Stage.SHARE_KEYS and first
