"""Shared fuzzing helpers: a typed-error check, an input counter, a SecAgg corpus.

``FUZZ_COUNTS`` counts, per decoder, the inputs fed to it in this session; when the
environment variable ``FEDCRYPT_FUZZ_REPORT`` names a file, tests/fuzz/conftest.py writes
the counts there as JSON at the end of the session (``scripts/security_report.py`` reads
it for SECURITY.md's table).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from fedcrypt.errors import FedcryptError
from fedcrypt.secagg import SecAggConfig, Stage, decode_message
from fedcrypt.testing import InProcessClients, MaliciousServer

FUZZ_COUNTS: Counter[str] = Counter()


def typed_only(name: str, decoder: Callable[[bytes], Any], data: bytes, allowed: tuple[type, ...] = (FedcryptError,)) -> Any:
    """Feed ``data`` to ``decoder``; a result or an ``allowed`` error passes, anything else fails.

    Returns the decoded value, or the error raised.
    """
    FUZZ_COUNTS[name] += 1
    try:
        return decoder(data)
    except allowed as exc:
        assert str(exc), f"{name}: {type(exc).__name__} without a message"
        return exc
    except Exception as exc:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{name} raised an untyped {type(exc).__name__}: {exc}") from exc


class _Recording:
    """Endpoints wrapper that records every request and reply as bytes."""

    def __init__(self, inner: InProcessClients) -> None:
        self.inner = inner
        self.config, self.round_id = inner.config, inner.round_id
        self.associated_data, self.inputs = inner.associated_data, inner.inputs
        self.clients = inner.clients
        self.blobs: list[tuple[str, bytes]] = []

    def advertise(self, client_id: int) -> bytes:
        reply = self.inner.advertise(client_id)
        self.blobs.append((type(decode_message(reply)).__name__, reply))
        return reply

    def deliver(self, client_id: int, request: bytes) -> bytes:
        self.blobs.append((type(decode_message(request)).__name__, request))
        reply = self.inner.deliver(client_id, request)
        self.blobs.append((type(decode_message(reply)).__name__, reply))
        return reply


def secagg_corpus(verify: bool) -> dict[str, bytes]:
    """One valid encoding of every SecAgg message type from a real round (with a dropout,
    so unmask requests carry both survivors and dropped clients)."""
    config = SecAggConfig(5, 3, verify_survivors=verify)
    endpoints = _Recording(InProcessClients(config, round_id=9, length=16))
    report = MaliciousServer(endpoints, drops={Stage.UNMASK if verify else Stage.MASKED_INPUT: {4}}).run()
    assert report.completed
    corpus: dict[str, bytes] = {}
    for name, blob in endpoints.blobs:
        if name not in corpus or len(blob) > len(corpus[name]):
            corpus[name] = blob
    return corpus
