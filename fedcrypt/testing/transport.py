"""Client endpoints: what a (malicious) server talks to, whatever the transport.

A :class:`ClientEndpoints` is the client side of one SecAgg round seen through bytes: the
server asks client ``i`` to advertise its keys, then delivers one request at a time and
gets the reply bytes back (or the typed error the client raised). Point the adversarial
server of :mod:`fedcrypt.testing.malicious` and the dropout state machine of
:mod:`fedcrypt.testing.dropout` at an implementation of it to test *your* transport with
the same property-based protocol tests fedcrypt runs on itself:

* :class:`InProcessClients` - real :class:`~fedcrypt.secagg.ClientProtocol` objects in
  this process (the in-process simulator's clients);
* :class:`fedcrypt.integrations.flower.testing.FlowerClients` - a real Flower ``ClientApp`` with
  :data:`~fedcrypt.integrations.flower.secagg_mod`, every message through Flower's
  protobuf (extra ``flower``);
* your own: any object with the attributes and methods of :class:`ClientEndpoints`.

Invariants:

* an endpoint never hides a client error: a :class:`~fedcrypt.errors.FedcryptError` the
  client raised reaches the caller as that same type (a transport that turns errors into
  error replies must raise them again here);
* ``inputs`` are the ring vectors the clients aggregate (test data, known to the test so
  that it can check the sum; never known to a real server), or ``None``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from fedcrypt.crypto import Ed25519KeyPair
from fedcrypt.secagg import ClientProtocol, SecAggConfig

__all__ = ["ClientEndpoints", "InProcessClients"]


@runtime_checkable
class ClientEndpoints(Protocol):
    """The client side of one round, as bytes in and bytes out.

    Attributes:
        config: the round's :class:`~fedcrypt.secagg.SecAggConfig`.
        round_id: the round number every client binds.
        associated_data: the bytes an honest server binds into the round (what
            :class:`~fedcrypt.secagg.ServerProtocol` needs to accept the clients' adverts).
        inputs: the clients' ring vectors, by id (for checking sums), or ``None`` when the
            transport computes them itself (a Flower app trains at the masked-input
            stage): exact-sum checks are then skipped.
    """

    config: SecAggConfig
    round_id: int
    associated_data: bytes

    @property
    def inputs(self) -> list[np.ndarray] | None:
        """The clients' ring vectors, by id, or ``None`` (read-only: a transport may hold a list)."""

    def advertise(self, client_id: int) -> bytes:
        """Start client ``client_id``'s round; return its ``AdvertiseKeys`` bytes."""

    def deliver(self, client_id: int, request: bytes) -> bytes:
        """Hand one server request to a client; return its reply bytes or raise its typed error."""


class InProcessClients:
    """Real :class:`~fedcrypt.secagg.ClientProtocol` objects of one round, in this process.

    Args:
        config: the round parameters.
        inputs: one ring vector per client (``config.codec.ring_dtype``), or ``None`` for
            random test vectors of ``length`` elements drawn from ``rng``.
        round_id: the round number.
        associated_data: bytes every client binds into the round; a per-client mapping
            may be given instead (to model clients holding different global models).
        length: vector length when ``inputs`` is ``None``.
        rng: source of the test vectors (not secret material).
        signing_keys: Ed25519 keys by client id for ``verify_survivors`` rounds; fresh
            ones by default. Reuse them across rounds, as a PKI would.
    """

    def __init__(
        self,
        config: SecAggConfig,
        inputs: list[np.ndarray] | None = None,
        *,
        round_id: int = 0,
        associated_data: bytes | dict[int, bytes] = b"",
        length: int = 8,
        rng: np.random.Generator | None = None,
        signing_keys: list[Ed25519KeyPair] | None = None,
    ) -> None:
        if not isinstance(config, SecAggConfig):
            raise TypeError(f"config must be a SecAggConfig, got {type(config).__name__}")
        n = config.num_clients
        ring = config.codec.ring_dtype
        if inputs is None:
            rng = rng if rng is not None else np.random.default_rng()
            inputs = [rng.integers(0, np.iinfo(ring).max, size=length, dtype=ring, endpoint=True) for _ in range(n)]
        if len(inputs) != n or any(not isinstance(v, np.ndarray) or v.dtype != ring or v.ndim != 1 for v in inputs):
            raise ValueError(f"inputs must be {n} 1-D {ring} vectors")
        self.config = config
        self.round_id = round_id
        per_client = associated_data if isinstance(associated_data, dict) else {i: associated_data for i in range(n)}
        self.associated_data = per_client.get(0, b"")
        self.inputs = [np.array(v, copy=True) for v in inputs]
        self.signing_keys: list[Ed25519KeyPair] | None
        if config.verify_survivors:
            self.signing_keys = signing_keys if signing_keys is not None else [Ed25519KeyPair.generate() for _ in range(n)]
            verify = {i: k.public_bytes for i, k in enumerate(self.signing_keys)}
        else:
            self.signing_keys, verify = None, None
        self.clients = [
            ClientProtocol(
                config,
                i,
                round_id=round_id,
                associated_data=per_client[i],
                vector=self.inputs[i],
                signing_key=self.signing_keys[i] if self.signing_keys else None,
                verify_keys=verify,
            )
            for i in range(n)
        ]

    def __repr__(self) -> str:
        return f"InProcessClients(n={self.config.num_clients}, round={self.round_id})"

    def advertise(self, client_id: int) -> bytes:
        """Client ``client_id`` generates its keys and advertises them."""
        return self.clients[client_id].advertise().to_bytes()

    def deliver(self, client_id: int, request: bytes) -> bytes:
        """Client ``client_id`` handles the request bytes; its reply bytes."""
        return self.clients[client_id].handle(request).to_bytes()
