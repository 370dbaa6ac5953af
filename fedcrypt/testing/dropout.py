"""A hypothesis state machine over one SecAgg round with dropouts, replays and forgeries.

:func:`dropout_state_machine` builds a :class:`hypothesis.stateful.RuleBasedStateMachine`
that drives any :class:`~fedcrypt.testing.transport.ClientEndpoints` (the in-process
clients, a Flower ClientApp, your own transport) against the honest
:class:`~fedcrypt.secagg.ServerProtocol`. Hypothesis chooses, step by step, which client
answers next, which one goes silent, which old request is replayed to a client, which old
reply is replayed to the server, which request arrives corrupted, and when the server
stops waiting. Its invariants are those of Bonawitz et al. (2017) Sec. 4 and Bell et al.
(2020) Sec. 3:

* the server never holds both kinds of shares (self-mask and mask-key) of one client;
* a replayed or corrupted message is refused with a
  :class:`~fedcrypt.errors.FedcryptError` and leaves the server's accepted set as it was;
* a round that finishes returns exactly the ring sum of the clients whose masked input
  the server accepted; otherwise it ends in :class:`~fedcrypt.errors.RoundAbortedError`,
  and only after some client dropped or was refused.

Usage::

    from fedcrypt.testing import dropout_state_machine
    TestMyTransport = dropout_state_machine(lambda config: MyEndpoints(config)).TestCase
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from fedcrypt._optional import require
from fedcrypt.errors import FedcryptError, InvalidShare, LocalProtocolError, RoundAbortedError
from fedcrypt.secagg import SecAggConfig, ServerProtocol, Stage

from .strategies import mutations, secagg_configs
from .transport import ClientEndpoints, InProcessClients

require("hypothesis", "testing")

from hypothesis import strategies as st  # noqa: E402 - after the extra check
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: E402

__all__ = ["dropout_state_machine"]

_TERMINAL = (Stage.DONE, Stage.ABORTED)


def dropout_state_machine(
    make_endpoints: Callable[[SecAggConfig], ClientEndpoints] | None = None,
    configs: st.SearchStrategy[SecAggConfig] | None = None,
) -> type[RuleBasedStateMachine]:
    """A RuleBasedStateMachine class over one round of ``make_endpoints(config)``.

    Args:
        make_endpoints: builds the clients of a round for a config (default: in-process
            clients with 6-element random ring inputs).
        configs: the configurations to draw (default: 3 to 6 clients, SecAgg and SecAgg+,
            with and without ``verify_survivors``).

    Returns:
        The machine class; its ``TestCase`` attribute is a unittest/pytest test.
    """
    build = make_endpoints or (lambda config: InProcessClients(config, round_id=7, length=6))
    config_strategy = configs if configs is not None else secagg_configs(min_clients=3, max_clients=6, verify_survivors=None)

    class SecAggDropoutMachine(RuleBasedStateMachine):
        """One SecAgg round; hypothesis picks the order of answers, dropouts and attacks."""

        @initialize(config=config_strategy)
        def start(self, config: SecAggConfig) -> None:
            self.config = config
            self.endpoints = build(config)
            self.server = ServerProtocol(
                config,
                round_id=self.endpoints.round_id,
                associated_data=self.endpoints.associated_data,
                dimension=int(self.endpoints.inputs[0].shape[0]) if self.endpoints.inputs is not None else None,
            )
            self.requests: dict[int, bytes] = {}
            self.answered: set[int] = set()
            self.silent: set[int] = set()
            self.old_requests: list[tuple[int, bytes]] = []
            self.old_replies: list[bytes] = []
            self.masked_senders: set[int] = set()
            self.disturbed = False
            self.outcome: str | None = None

        # ------------------------------------------------------------- helpers
        def _pending(self) -> list[int]:
            stage = self.server.stage
            candidates: Iterable[int]
            if stage in _TERMINAL:
                return []
            if stage is Stage.ADVERTISE_KEYS:
                candidates = range(self.config.num_clients)
            else:
                candidates = self.requests
            return sorted(c for c in candidates if c not in self.answered and c not in self.silent)

        # ------------------------------------------------------------- rules
        @precondition(lambda self: bool(self._pending()))
        @rule(data=st.data())
        def client_answers(self, data: Any) -> None:
            client = data.draw(st.sampled_from(self._pending()), label="client")
            stage = self.server.stage
            if stage is Stage.ADVERTISE_KEYS:
                reply = self.endpoints.advertise(client)
            else:
                reply = self.endpoints.deliver(client, self.requests[client])
                self.old_requests.append((client, self.requests[client]))
            self.server.receive(reply)  # an honest client's reply is always accepted
            self.old_replies.append(reply)
            self.answered.add(client)
            if stage is Stage.MASKED_INPUT:
                self.masked_senders.add(client)

        @precondition(lambda self: bool(self._pending()))
        @rule(data=st.data())
        def client_goes_silent(self, data: Any) -> None:
            self.silent.add(data.draw(st.sampled_from(self._pending()), label="silent client"))
            self.disturbed = True

        @precondition(lambda self: bool(self.old_requests))
        @rule(data=st.data())
        def server_replays_a_request(self, data: Any) -> None:
            client, request = data.draw(st.sampled_from(self.old_requests), label="replayed request")
            try:
                self.endpoints.deliver(client, request)
            except FedcryptError:
                return
            raise AssertionError(f"client {client} answered a request it had already answered")

        @precondition(lambda self: bool(self.old_replies) and self.server.stage not in _TERMINAL)
        @rule(data=st.data())
        def client_reply_is_replayed(self, data: Any) -> None:
            reply = data.draw(st.sampled_from(self.old_replies), label="replayed reply")
            before = self.server.received
            try:
                self.server.receive(reply)
            except FedcryptError:
                assert self.server.received == before
                return
            raise AssertionError("the server accepted a replayed reply")

        @precondition(lambda self: any(c in self.requests for c in self._pending()))
        @rule(data=st.data())
        def corrupted_request(self, data: Any) -> None:
            client = data.draw(st.sampled_from([c for c in self._pending() if c in self.requests]), label="client")
            forged = data.draw(mutations(self.requests[client]), label="forged request")
            if forged == self.requests[client]:
                return
            try:
                self.endpoints.deliver(client, forged)
            except FedcryptError:
                return
            # a mutation that still decodes and verifies (e.g. another id list): from the
            # server's side this client has answered something else; it drops out
            self.silent.add(client)
            self.disturbed = True

        @precondition(lambda self: self.server.stage not in _TERMINAL)
        @rule()
        def server_stops_waiting(self) -> None:
            stage = self.server.stage
            if len(self.answered) < self.config.num_clients - len(self.silent):
                self.disturbed = True  # someone still pending is dropped by end_stage
            try:
                out = self.server.end_stage()
            except (RoundAbortedError, InvalidShare):
                assert self.server.stage is Stage.ABORTED
                self.outcome = "aborted"
                assert self.disturbed, "a round in which every client answered everything aborted"
                return
            self.requests = {client: message.to_bytes() for client, message in out.items()}
            self.answered = set()
            if self.server.stage is Stage.DONE:
                result = self.server.result
                assert set(result.survivors) == self.masked_senders
                if self.endpoints.inputs is None:  # the transport computes its inputs itself
                    self.outcome = "done"
                    return
                expected = np.zeros_like(self.endpoints.inputs[0])
                for client in result.survivors:
                    expected += self.endpoints.inputs[client]
                assert np.array_equal(result.ring_sum, expected), f"wrong sum after stage {stage.name}"
                self.outcome = "done"

        @precondition(lambda self: self.server.stage in _TERMINAL)
        @rule()
        def round_is_over(self) -> None:
            try:
                self.server.end_stage()
            except LocalProtocolError:
                assert self.server.stage in _TERMINAL
                return
            raise AssertionError("a finished round accepted another end_stage")

        # ------------------------------------------------------------- invariants
        @invariant()
        def never_both_shares_of_one_client(self) -> None:
            if not hasattr(self, "server"):
                return
            for owner, kinds in self.server.share_kinds_revealed().items():
                assert len(kinds) <= 1, f"the server holds both share kinds of client {owner}"

    SecAggDropoutMachine.__name__ = SecAggDropoutMachine.__qualname__ = "SecAggDropoutMachine"
    return SecAggDropoutMachine
