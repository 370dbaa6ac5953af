"""Shared fixtures of the CKKS tests: one key per preset for the whole session (keygen is slow)."""

from __future__ import annotations

import pytest

from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner


@pytest.fixture(scope="session")
def compact_owner() -> KeyOwner:
    return KeyOwner.generate(CkksParams.preset("compact", num_clients=20))


@pytest.fixture(scope="session")
def compact_server(compact_owner: KeyOwner) -> AggregatorContext:
    return AggregatorContext.from_bytes(compact_owner.aggregator_context().to_bytes())


@pytest.fixture(scope="session")
def weighted_owner() -> KeyOwner:
    return KeyOwner.generate(CkksParams.preset("weighted", num_clients=20))


@pytest.fixture(scope="session")
def weighted_server(weighted_owner: KeyOwner) -> AggregatorContext:
    return AggregatorContext.from_bytes(weighted_owner.aggregator_context().to_bytes())
