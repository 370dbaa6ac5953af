"""ServerApp: Flower's FedAvg on a ``SecAggGrid`` whose workflow holds the roster (the
malicious-server mode: signed adverts, the consistency round). With run config
``attack = "swap-key"`` the server deviates: :class:`KeySwapGrid` replaces the second
advertised key pair in the key directory it relays to client 0, as the in-process
key-substitution test does (tests/flower/test_flower_roster.py). Writes the final model, the
round reports, the round's config and what the attacked node sent back to ``result-path``.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.identity import Roster
from fedcrypt.integrations.flower import RECORD, SecAggGrid, SecAggWorkflow
from fedcrypt.secagg import AdvertiseKeys, KeyDirectory, decode_message

app = ServerApp()


class KeySwapGrid(Grid):
    """A deviating server's grid: every call goes to ``grid``, except that the key directory
    relayed to client 0 carries a fresh key pair in place of the second advert's (its
    signature kept); the replies of the node it went to are recorded in :attr:`victim_replies`."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.victim: int | None = None
        self.tampered = 0
        self.victim_replies: list[dict[str, Any]] = []

    def _swap(self, message: Message) -> None:
        if RECORD not in message.content.keys() or not message.content[RECORD].get("payload"):
            return
        request = decode_message(message.content[RECORD]["payload"])
        if not isinstance(request, KeyDirectory) or request.recipient != 0:
            return
        adverts = list(request.adverts)
        victim = adverts[1]
        adverts[1] = AdvertiseKeys(victim.round_id, victim.sender, X25519KeyPair.generate().public_bytes,
                                   X25519KeyPair.generate().public_bytes, victim.context, victim.signature)
        message.content[RECORD]["payload"] = KeyDirectory(request.round_id, request.recipient, tuple(adverts)).to_bytes()
        self.victim, self.tampered = message.metadata.dst_node_id, self.tampered + 1

    # Grid API
    def set_run(self, run: Any) -> None:  # noqa: D102
        self.grid.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:  # noqa: D102
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        messages = list(messages)
        for message in messages:
            self._swap(message)
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        replies = list(self.grid.pull_messages(message_ids))
        for reply in replies:
            if self.victim is not None and reply.metadata.src_node_id == self.victim:
                record = reply.content[RECORD] if not reply.has_error() and RECORD in reply.content.keys() else None
                self.victim_replies.append({
                    "error": reply.error.reason if reply.has_error() else None,
                    "stage": record.get("stage") if record is not None else None,
                    "payload_bytes": len(record.get("payload") or b"") if record is not None else 0,
                })
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:  # noqa: D102
        messages = list(messages)
        for message in messages:
            self._swap(message)
        return self.grid.send_and_receive(messages, timeout=timeout)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    nodes, timeout = int(cfg["min-nodes"]), float(cfg["stage-timeout"])
    roster = Roster.load(str(cfg["roster-path"]), expected_digest=bytes.fromhex(str(cfg["roster-digest"])))
    workflow = SecAggWorkflow(
        threshold=float(cfg["secagg-threshold"]), clip=float(cfg["secagg-clip"]), max_weight=float(cfg["secagg-max-weight"]),
        roster=roster, stage_timeout=timeout, train_timeout=float(cfg["train-timeout"]), poll_interval=0.25,
    )
    attack = str(cfg["attack"])
    if attack not in ("", "swap-key"):
        raise ValueError(f"attack must be '' or 'swap-key', got {attack!r}")
    server_grid = KeySwapGrid(grid) if attack == "swap-key" else grid
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes)
    result = strategy.start(
        grid=SecAggGrid(server_grid, workflow),
        initial_arrays=ArrayRecord({"w": Array(np.zeros(int(cfg["model-size"]), dtype=np.float32))}),
        num_rounds=1,
        timeout=timeout,
    )
    config = workflow.config_for(nodes)
    summary = {
        "arrays": {name: array.numpy().tolist() for name, array in result.arrays.items()},
        "rounds": [report.to_dict() for report in workflow.reports],
        "config": {"num_clients": config.num_clients, "threshold": config.threshold, "verify_survivors": config.verify_survivors,
                   "consistency_quorum": config.consistency_quorum, "threat_model": config.threat_model},
        "attack": {"victim": server_grid.victim, "tampered": server_grid.tampered, "victim_replies": server_grid.victim_replies}
        if isinstance(server_grid, KeySwapGrid) else None,
    }
    with open(str(cfg["result-path"]), "w", encoding="utf-8") as handle:
        json.dump(summary, handle)
