"""Pairwise-masking secure aggregation: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

A server learns the sum of the surviving clients' vectors and nothing else, even when
clients drop out at any step. The protocol objects are sans-IO: :class:`ClientProtocol`
and :class:`ServerProtocol` take and return typed messages (or their canonical bytes);
moving the bytes is the transport's job. :func:`simulate` and :func:`simulate_ring` run a
whole round in one process.

Client ids are ``0 .. num_clients-1``; Shamir evaluation points are ``id + 1``.
"""

from .client import ClientProtocol
from .config import MAX_CLIENTS, SecAggConfig, harary_graph
from .messages import (
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    MessageType,
    ShareBundle,
    Stage,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode_message,
)
from .server import AggregationResult, ServerProtocol
from .simulate import SimulationResult, simulate, simulate_ring

__all__ = [
    "SecAggConfig",
    "ClientProtocol",
    "ServerProtocol",
    "AggregationResult",
    "Stage",
    "simulate",
    "simulate_ring",
    "SimulationResult",
    "MAX_CLIENTS",
    "harary_graph",
    "Message",
    "MessageType",
    "decode_message",
    "AdvertiseKeys",
    "KeyDirectory",
    "EncryptedShares",
    "ShareBundle",
    "MaskedInput",
    "SurvivorList",
    "ConsistencySignature",
    "UnmaskRequest",
    "UnmaskShares",
]
