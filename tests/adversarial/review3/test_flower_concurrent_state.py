"""Attacker review 3, sealed Flower state: two messages run from one Context snapshot answer twice.

Flower's simulation runtime runs ``backend.num_workers`` workers; each takes the next
message from the queue, reads the destination node's Context, runs the ClientApp and writes
the Context back. Two messages for the same node are then processed concurrently from the
same ``Context.state`` and the last write wins. (Checked with flwr 1.42 on a loopback
SuperLink in simulation mode with two workers: a ClientApp that counts its calls in
``Context.state`` saw 0 on both of two messages pushed together, and 1 on the next. A
SuperNode deployment pulls the next message only after the previous reply, but its
ClientApp process pushes the reply before the Context, so a late or lost write-back gives
the next message the older snapshot too.)

The sealed record stops a *reader* of ``Context.state`` and refuses a swapped record, but a
node's "one survivor set per round" and "one unmask answer per round" are only as good as
the state each message starts from. Here, with a roster (malicious-server mode, SecAgg n=5):
every node is asked to sign two survivor sets (with and without the victim), every holder to
answer two unmask requests (the victim survived / dropped); answered, the server would hold
``t`` self-mask shares and ``t`` mask-key shares of the victim: its input unmasked.

The fix (``fedcrypt.integrations.flower._state``): a mod replaces its sealed record only
after it has written, with ``O_CREAT | O_EXCL``, the spent record's hash into a node-local
journal, before the reply leaves; the second message from one snapshot is refused. The
positive control below switches the journal off and the same interleaving unmasks the input.

The endpoint below is ``FlowerClients`` (real ClientApp with ``secagg_mod``, every message
through Flower's protobuf) with a roster, and one change: the ``k``-th message of a stage for a
node starts from the state the ``k``-th message of the previous stage wrote: one interleaving
of concurrent workers (each reads the Context when it starts and writes it when it ends).
What it takes: every node in both signed quorums must run its two consistency messages
concurrently (two workers per node at once), and at least ``2t - m`` holders (here 3 of the four
non-victims; the test forks all four; in general ``c + 1`` or ``c + 2``) must start the
unmask request for the set with the victim after their first consistency message wrote and
before their second one wrote, i.e. after the server collected a quorum of signatures on
that set. The server does not control worker timing, so this is a race it may win on some
rounds (a lost race only aborts the round); the test fixes the winning interleaving.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedcrypt.identity import NodeIdentity, Roster  # noqa: E402
from fedcrypt.integrations.flower import (  # noqa: E402
    NODE_IDENTITY,
    NODE_ROSTER,
    NODE_ROSTER_DIGEST,
    RECORD,
    round_binding,
)
from fedcrypt.integrations.flower import _state  # noqa: E402
from fedcrypt.integrations.flower._state import NODE_JOURNAL  # noqa: E402
from fedcrypt.integrations.flower.testing import FlowerClients, example_client_app, example_train_content  # noqa: E402
from fedcrypt.secagg.setup import weight_bytes  # noqa: E402
from fedcrypt.secagg import (  # noqa: E402
    ConsistencySignature,
    SecAggConfig,
    Stage,
    SurvivorList,
    UnmaskRequest,
    decode_message,
)
from fedcrypt.secagg.membership import pack_members  # noqa: E402
from fedcrypt.testing.malicious import MaliciousServer  # noqa: E402

N = 5


class ConcurrentRosterClients(FlowerClients):
    """FlowerClients with a roster; a stage's second message to a node runs from the first one's Context."""

    def __init__(self, tmp_path, config: SecAggConfig, **kwargs) -> None:
        super().__init__(example_client_app(), config, example_train_content(), **kwargs)
        identities = {f"node-{i}": NodeIdentity.generate() for i in range(config.num_clients)}
        for name, identity in identities.items():
            identity.save(tmp_path / f"{name}.pem")
        roster = Roster({name: identity.public_bytes for name, identity in identities.items()})
        roster.save(tmp_path / "roster.txt")
        for i, context in self.contexts.items():
            context.node_config.update({
                NODE_IDENTITY: str(tmp_path / f"node-{i}.pem"),
                NODE_ROSTER: str(tmp_path / "roster.txt"),
                NODE_ROSTER_DIGEST: roster.digest().hex(),
                NODE_JOURNAL: str(tmp_path / "journal"),  # one node-local journal per node; here one per test
            })
        self.members = pack_members([f"node-{i}" for i in range(config.num_clients)])
        self.associated_data = round_binding(self.run_id, self.round_id, self.nodes_bytes, self.dp, self._model(0), self.members,
                                             weight_bytes(self.max_weight))
        self._branches: dict[int, tuple] = {}

    def advertise(self, client_id: int) -> bytes:
        from fedcrypt.secagg.setup import dump_config

        fields = {
            "stage": Stage.ADVERTISE_KEYS.name, "payload": b"", "config": dump_config(self.config),
            "nodes": self.nodes_bytes, "client-id": client_id, "round": self.round_id, "max-weight": self.max_weight,
            "dp": self.dp, "model": self._model(client_id), "members": self.members,
        }
        return self._call(client_id, fields)

    def _call(self, client_id, fields, extra=None):
        """Message ``k`` of a stage runs from the state message ``k`` of the previous stage wrote.

        One schedule the simulation runtime allows: the node's two consistency messages both
        read the state after its masked input; the first writes (signed set A) and, before
        the second writes (signed set B), the unmask request for A reads it; the unmask
        request for B reads what the second wrote.
        """
        stage = fields["stage"]
        context = self.contexts[client_id]
        current, previous, written = self._branches.get(client_id, (None, [copy.deepcopy(context.state)], []))
        if stage != current:
            previous, written = (written or previous), []
        context.state = copy.deepcopy(previous[min(len(written), len(previous) - 1)])
        try:
            return super()._call(client_id, fields, extra)
        finally:
            written.append(copy.deepcopy(context.state))
            self._branches[client_id] = (stage, previous, written)


class TwoSurvivorSetsAtOnce(MaliciousServer):
    """Every node is sent both survivor sets at once, then every holder both unmask requests."""

    name = "two survivor sets and two unmask requests at once (simulation runtime)"

    def __init__(self, endpoints, victim: int = 0, **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.victim = victim
        self.signed: dict[tuple[int, ...], dict[int, bytes]] = {}
        self._asked: dict[int, list[tuple[int, ...]]] = {}

    def tamper(self, stage, client, request):
        if isinstance(request, SurvivorList) and client != self.victim and self.victim in request.survivors:
            without = tuple(v for v in request.survivors if v != self.victim)
            self._asked[client] = [request.survivors, without]
            return [request, SurvivorList(request.round_id, request.recipient, without)]
        if isinstance(request, SurvivorList):
            self._asked[client] = [request.survivors]
        if isinstance(request, UnmaskRequest) and client != self.victim and self.victim in request.survivors:
            without = tuple(v for v in request.survivors if v != self.victim)
            signatures = tuple(sorted(self.signed.get(without, {}).items()))
            second = UnmaskRequest(
                request.round_id, request.recipient, without, tuple(sorted(request.dropped + (self.victim,))),
                signatures, tuple(a for a in request.attestations if a[0] != self.victim),
            )
            return [request, second]
        return super().tamper(stage, client, request)

    def observe(self, stage, client, request, reply):
        super().observe(stage, client, request, reply)
        if isinstance(request, SurvivorList) and isinstance(reply, ConsistencySignature):
            self.signed.setdefault(request.survivors, {})[client] = reply.signature


def _attack(tmp_path):
    """Run the attack; whether node 0's input came out, and the report."""
    from fedcrypt.errors import HonestButCuriousWarning

    config = SecAggConfig(num_clients=N, threshold=4, verify_survivors=True, clip=8.0)
    endpoints = ConcurrentRosterClients(tmp_path, config)
    attack = TwoSurvivorSetsAtOnce(endpoints, victim=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        report = attack.run()
    # the victim (partition 0) trains w + 0.01 on a zero model with weight 10 (num-examples), M = 1000:
    # its masked input is w/M * [x, 1]
    expected = np.append(np.full(16, 0.01 * 10 / 1000), 10 / 1000)
    vector = attack.recover().get(0)
    return vector is not None and np.allclose(config.codec.decode(vector), expected, atol=1e-6), report


def test_two_messages_from_one_context_snapshot_do_not_unmask_an_input(tmp_path) -> None:
    stolen, report = _attack(tmp_path)
    assert not stolen and not report.leaked, (
        f"node 0's update was unmasked (both shares leaked: {report.leaked}): each node signed two survivor sets "
        "and answered two unmask requests, each run from a Context another message had read or written"
    )
    spent = [r for r in report.refusals if r.error == "UnexpectedMessageError" and "answered a message already" in r.message]
    assert {r.stage for r in spent} >= {Stage.CONSISTENCY_CHECK}, report.refusals  # the second signature is refused
    assert all(0 < r.client < N for r in spent)


def test_positive_control_without_the_journal_the_same_interleaving_unmasks_the_input(tmp_path, monkeypatch) -> None:
    """The attack is real: with the journal a no-op, the nodes answer twice and node 0's input comes out."""
    monkeypatch.setattr(_state, "spend", lambda ctxt, record: None)
    stolen, report = _attack(tmp_path)
    assert stolen and 0 in report.leaked
    assert not (tmp_path / "journal").exists()
