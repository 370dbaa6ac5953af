"""Stateful property test: N clients and a server with dropouts, replays, forgeries, a malicious server.

Invariants checked after every step: once the round is DONE the result is the exact ring
sum of the survivors' inputs and the survivors are exactly the clients whose masked input
was accepted; the server never holds both kinds of shares of one client; every rejected
input raised a typed error and left the object that refused it unchanged.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import (
    FedcryptError,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.secagg import AdvertiseKeys, KeyDirectory, MaskedInput, SecAggConfig, Stage, UnmaskRequest, decode_message

from .harness import Round

CONFIGS = {
    "secagg": SecAggConfig(num_clients=5, threshold=3),
    "secagg-verify": SecAggConfig(num_clients=5, threshold=3, verify_survivors=True),
    "secagg+": SecAggConfig(num_clients=8, threshold=3, neighbours=4, graph_seed=b"sm"),
}
TERMINAL = (Stage.DONE, Stage.ABORTED)


def _client_state(client) -> tuple:
    return (client.stage, sorted(client._directory), sorted(client._shares), client._u2, client._u3, client._input is None)


def _server_state(server) -> tuple:
    acc = None if server._accumulator is None else server._accumulator.tobytes()
    acc = (acc, sorted((label, total.tobytes()) for label, total in server._groups.items()))
    return (server.stage, server.received, acc, {k: sorted(v) for k, v in server._seed_shares.items()},
            {k: sorted(v) for k, v in server._key_shares.items()})


class SecAggMachine(RuleBasedStateMachine):
    @initialize(kind=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 1000))
    def setup(self, kind: str, seed: int) -> None:
        self.round = Round(CONFIGS[kind], length=8, seed=seed)
        self.n = CONFIGS[kind].num_clients
        self.pending: dict[int, bytes | None] = {i: None for i in range(self.n)}  # None: advertise
        self.dropped: set[int] = set()
        self.accepted: list[bytes] = []
        self.delivered: list[tuple[int, bytes]] = []
        self.masked_senders: set[int] = set()

    # -------------------------------------------------------------- honest traffic
    @precondition(lambda self: self.pending)
    @rule(data=st.data(), count=st.integers(1, 8))
    def answer(self, data, count: int) -> None:
        for _ in range(min(count, len(self.pending))):
            i = data.draw(st.sampled_from(sorted(self.pending)))
            request = self.pending.pop(i)
            client = self.round.clients[i]
            reply = client.advertise() if request is None else client.handle(request)
            if request is not None:
                self.delivered.append((i, request))
            blob = reply.to_bytes()
            self.round.server.receive(blob)
            self.accepted.append(blob)
            if isinstance(reply, MaskedInput):
                self.masked_senders.add(i)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), coin=st.integers(0, 2))
    def drop(self, data, coin: int) -> None:
        if coin != 1:  # drop now and then, so that rounds also finish
            return
        i = data.draw(st.sampled_from(sorted(self.pending)))
        del self.pending[i]
        self.dropped.add(i)

    @precondition(lambda self: self.round.server.stage not in TERMINAL)
    @rule(coin=st.integers(0, 5))
    def end_stage(self, coin: int) -> None:
        if self.pending and coin != 3:  # stop waiting early now and then, otherwise wait for everyone
            return
        try:
            requests = self.round.server.end_stage()
        except RoundAbortedError as exc:
            assert self.round.server.stage is Stage.ABORTED
            event(f"round ABORTED at {exc.stage.name}")
            self.pending = {}
            return
        self.pending = {i: m.to_bytes() for i, m in requests.items() if i not in self.dropped}

    @precondition(lambda self: self.round.server.stage in TERMINAL)
    @rule()
    def poke_finished_server(self) -> None:
        before = _server_state(self.round.server)
        try:
            self.round.server.end_stage()
        except LocalProtocolError:
            pass
        else:
            raise AssertionError("a finished round ended another stage")
        assert _server_state(self.round.server) == before

    # -------------------------------------------------------------- hostile traffic
    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def replay_to_server(self, data) -> None:
        blob = data.draw(st.sampled_from(self.accepted))
        before = _server_state(self.round.server)
        try:
            self.round.server.receive(blob)
        except UnexpectedMessageError:
            pass
        else:
            raise AssertionError("a replayed message was accepted")
        assert _server_state(self.round.server) == before

    @precondition(lambda self: self.accepted)
    @rule(data=st.data(), cut=st.integers(1, 40), extra=st.binary(min_size=1, max_size=9))
    def malformed_to_server(self, data, cut: int, extra: bytes) -> None:
        blob = data.draw(st.sampled_from(self.accepted))
        bad = data.draw(st.sampled_from([blob[: max(0, len(blob) - cut)], blob + extra]))
        before = _server_state(self.round.server)
        try:
            self.round.server.receive(bad)
        except MalformedMessageError:
            pass
        else:
            raise AssertionError("a malformed message was accepted")
        assert _server_state(self.round.server) == before

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def replay_to_client(self, data) -> None:
        i, blob = data.draw(st.sampled_from(self.delivered))
        client = self.round.clients[i]
        before = _client_state(client)
        try:
            client.handle(blob)
        except UnexpectedMessageError:
            pass
        else:
            raise AssertionError("a client answered a replayed request")
        assert _client_state(client) == before

    @precondition(lambda self: any(r is not None for r in self.pending.values()))
    @rule(data=st.data(), cut=st.integers(1, 40), extra=st.binary(min_size=1, max_size=9))
    def forged_to_client(self, data, cut: int, extra: bytes) -> None:
        i = data.draw(st.sampled_from(sorted(k for k, r in self.pending.items() if r is not None)))
        blob = self.pending[i]
        round_flipped = blob[:6] + bytes([blob[6] ^ 0x80]) + blob[7:]
        bad = data.draw(st.sampled_from([blob[: max(0, len(blob) - cut)], blob + extra, round_flipped]))
        client = self.round.clients[i]
        before = _client_state(client)
        try:
            client.handle(bad)
        except FedcryptError:
            pass
        else:
            raise AssertionError("a forged request was answered")
        assert _client_state(client) == before

    @precondition(lambda self: any(r is not None for r in self.pending.values()) and len(self.pending) >= 2)
    @rule(data=st.data())
    def misrouted_to_client(self, data) -> None:
        i, j = data.draw(st.permutations(sorted(self.pending)))[:2]
        if self.pending[i] is None:
            return
        client = self.round.clients[j]
        before = _client_state(client)
        try:
            client.handle(self.pending[i])
        except UnexpectedMessageError:
            pass
        else:
            raise AssertionError("a client answered a request addressed to another client")
        assert _client_state(client) == before

    @precondition(
        lambda self: any(r is not None and r[5] == 8 for r in self.pending.values())  # an UnmaskRequest is pending
    )
    @rule(data=st.data())
    def malicious_unmask_request(self, data) -> None:
        i = data.draw(st.sampled_from(sorted(k for k, r in self.pending.items() if r is not None and r[5] == 8)))
        honest = decode_message(self.pending[i])
        victim = data.draw(st.sampled_from(honest.survivors))
        lie = UnmaskRequest(honest.round_id, i, honest.survivors, tuple(sorted(set(honest.dropped) | {victim})), honest.signatures)
        client = self.round.clients[i]
        before = _client_state(client)
        try:
            client.handle(lie)
        except ProtocolViolationError:
            pass
        else:
            raise AssertionError("a client answered an unmask request naming a client as both survived and dropped")
        assert _client_state(client) == before

    def _pending_of_type(self, code: int) -> list[int]:
        return sorted(k for k, r in self.pending.items() if r is not None and r[5] == code)

    @precondition(lambda self: self.round.config.verify_survivors and self._pending_of_type(2))
    @rule(data=st.data())
    def swapped_key_in_directory(self, data) -> None:
        i = data.draw(st.sampled_from(self._pending_of_type(2)))
        directory = decode_message(self.pending[i])
        others = [a for a in directory.adverts if a.sender != i]
        if not others:
            return
        victim = data.draw(st.sampled_from(others))
        swapped = tuple(
            AdvertiseKeys(a.round_id, a.sender, a.cipher_public_key, X25519KeyPair.generate().public_bytes, a.context, a.signature)
            if a is victim
            else a
            for a in directory.adverts
        )
        client = self.round.clients[i]
        before = _client_state(client)
        try:
            client.handle(KeyDirectory(directory.round_id, i, swapped).to_bytes())
        except InvalidSignature:
            pass
        else:
            raise AssertionError("a client accepted a swapped key under verify_survivors")
        assert _client_state(client) == before

    @precondition(lambda self: self.round.config.verify_survivors and self._pending_of_type(8))
    @rule(data=st.data(), forged=st.binary(min_size=64, max_size=64))
    def forged_consistency_signature(self, data, forged: bytes) -> None:
        i = data.draw(st.sampled_from(self._pending_of_type(8)))
        honest = decode_message(self.pending[i])
        if not honest.signatures:
            return
        position = data.draw(st.integers(0, len(honest.signatures) - 1))
        signatures = list(honest.signatures)
        signatures[position] = (signatures[position][0], forged)
        lie = UnmaskRequest(honest.round_id, i, honest.survivors, honest.dropped, tuple(signatures), honest.attestations)
        client = self.round.clients[i]
        before = _client_state(client)
        try:
            client.handle(lie)
        except InvalidSignature:
            pass
        else:
            raise AssertionError("a client unmasked on a forged consistency signature")
        assert _client_state(client) == before

    # -------------------------------------------------------------- invariants
    @invariant()
    def server_never_holds_both_share_kinds(self) -> None:
        if not hasattr(self, "round"):
            return
        for owner, kinds in self.round.server.share_kinds_revealed().items():
            assert len(kinds) == 1, f"server holds both share kinds of client {owner}"

    @invariant()
    def result_is_the_exact_survivor_sum(self) -> None:
        if not hasattr(self, "round") or self.round.server.stage is not Stage.DONE:
            return
        result = self.round.server.result
        event(f"round DONE with {len(result.survivors)} survivors")
        assert set(result.survivors) == self.masked_senders
        assert np.array_equal(result.ring_sum, self.round.expected_sum(result.survivors))


SecAggMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=80, deadline=None)
TestSecAggMachine = SecAggMachine.TestCase
