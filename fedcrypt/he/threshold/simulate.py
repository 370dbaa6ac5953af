"""In-process threshold-CKKS round: :func:`simulate` runs key holders, clients and the server
in one process, every message through its bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from fedcrypt.errors import RoundAbortedError

from .client import KeyHolder
from .messages import KeyBackupMessage, KeyShareMessage
from .params import ThresholdParams
from .server import ThresholdServer

__all__ = ["SimulationResult", "simulate"]


@dataclass(frozen=True)
class SimulationResult:
    """The outcome of :func:`simulate`.

    Attributes:
        weighted_sum: the decrypted ``sum_i w_i clip(x_i)`` over the uploaders (float64).
        uploaders: the clients whose uploads are in the sum (increasing).
        total_weight: their summed weight (from the aggregate's header).
        params: the parameters the round ran with.
        upload_bytes: bytes of one upload.
        share_bytes: bytes of one decryption share.
        joint_key_bytes: bytes of the joint-key message.
        client_seconds: mean seconds of one client's encryption.
        holder_seconds: mean seconds of one key holder's work (its key link and its share).
        server_seconds: seconds of the server's work (key relay, sum, fusion).
    """

    weighted_sum: np.ndarray = field(repr=False)
    uploaders: tuple[int, ...]
    total_weight: float
    params: ThresholdParams
    upload_bytes: int
    share_bytes: int
    joint_key_bytes: int
    client_seconds: float
    holder_seconds: float
    server_seconds: float


def simulate(
    params: ThresholdParams,
    vectors: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    *,
    dropouts: Iterable[int] = (),
    holder_dropouts: Iterable[int] = (),
) -> SimulationResult:
    """Run one threshold-CKKS round in process: all messages go through bytes.

    ``params.num_parties`` key holders (a committee, separate from the clients) run the key
    chain; every client not in ``dropouts`` encrypts its weighted vector under the joint
    key; the server sums them; every holder not in
    ``holder_dropouts`` sends its share; with a ``recovery_threshold`` (and the key backup
    run after key generation) the first surviving holder stands in for each dropped one,
    fed by the next ``t - 1`` survivors; the server fuses.

    Args:
        params: the parameters (``num_clients`` >= the number of vectors).
        vectors: one 1-D float vector per client, all of one length.
        weights: one weight per client, in ``(0, max_weight]`` (default 1).
        dropouts: clients that never upload (their vectors are ignored).
        holder_dropouts: key holders that drop before sending their decryption share.

    Raises:
        RoundAbortedError: a key holder dropped (n-of-n) or more than ``n - t`` did, or
            every client dropped.
        ValueError / TypeError: bad arguments.
    """
    if not isinstance(params, ThresholdParams):
        raise TypeError(f"params must be ThresholdParams, got {type(params).__name__}")
    count = len(vectors)
    if not 1 <= count <= params.num_clients:
        raise ValueError(f"need 1..{params.num_clients} vectors (num_clients), got {count}")
    weights = [1.0] * count if weights is None else list(weights)
    if len(weights) != count:
        raise ValueError(f"got {len(weights)} weights for {count} vectors")
    gone = set(dropouts)
    lost = set(holder_dropouts)
    if any(not (isinstance(c, int) and 0 <= c < count) for c in gone):
        raise ValueError("dropouts must be client indices")
    if any(not (isinstance(p, int) and 0 <= p < params.num_parties) for p in lost):
        raise ValueError("holder_dropouts must be key-holder indices")
    uploaders = tuple(i for i in range(count) if i not in gone)
    if not uploaders:
        raise RoundAbortedError("every client dropped out; nothing to aggregate", stage="upload")

    server_s = holder_s = client_s = 0.0

    def timed(fn: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    server, seconds = timed(lambda: ThresholdServer(params))
    server_s += seconds
    holders = [KeyHolder(params, p, server.session) for p in range(params.num_parties)]
    joint: KeyShareMessage | None = None
    for holder in holders:
        previous = server.key_input_for(holder.party)
        raw_previous = None if previous is None else previous.to_bytes()
        link, seconds = timed(lambda: holder.generate_key_share(raw_previous).to_bytes())  # noqa: B023 - timed() runs it now
        holder_s += seconds
        joint, seconds = timed(lambda: server.receive_key_share(link))  # noqa: B023 - timed() runs it now
        server_s += seconds
    assert joint is not None
    joint_bytes = joint.to_bytes()
    for holder in holders:
        holder.receive_joint_key(joint_bytes)
    if params.recovery_threshold:
        roster = server.roster_message().to_bytes()
        backups = []
        for holder in holders:
            holder.receive_roster(roster)
            messages, seconds = timed(lambda: [m.to_bytes() for m in holder.backup_key()])  # noqa: B023 - timed() runs it now
            holder_s += seconds
            backups.extend(messages)
        for raw in backups:
            recipient = KeyBackupMessage.from_bytes(raw, params).recipient
            _, seconds = timed(lambda: holders[recipient].receive_backup(raw))  # noqa: B023 - timed() runs it now
            holder_s += seconds
    # Clients are not key holders: they only need the public joint key and the fingerprint,
    # which a holder object in READY stage provides; any holder's encrypt is that operation.
    encryptor = holders[0]
    uploads = []
    for i in uploaders:
        blob, seconds = timed(lambda: encryptor.encrypt(vectors[i], weights[i]))  # noqa: B023 - timed() runs it now
        client_s += seconds
        uploads.append(blob)
    aggregate, seconds = timed(lambda: server.weighted_sum(uploads))
    server_s += seconds
    decryption = server.start_decryption(aggregate)
    share_bytes = 0
    for holder in holders:
        if holder.party in lost:
            continue
        raw, seconds = timed(lambda: holder.partial_decrypt(aggregate).to_bytes())  # noqa: B023 - timed() runs it now
        holder_s += seconds
        share_bytes = len(raw)
        _, seconds = timed(lambda: decryption.receive_share(raw))  # noqa: B023 - timed() runs it now
        server_s += seconds
    if lost:
        decryption.mark_dropped(sorted(lost))  # raises RoundAbortedError unless t-of-n
        alive = [h for h in holders if h.party not in lost]
        stand_in, helpers = alive[0], alive[1 : params.recovery_threshold]
        for dropped in decryption.standing_in:
            released = [h.release_backup(dropped, stand_in.party).to_bytes() for h in helpers]
            raw, seconds = timed(
                lambda: stand_in.recover_share(dropped, aggregate, released).to_bytes()  # noqa: B023 - timed() runs it now
            )
            holder_s += seconds
            _, seconds = timed(lambda: decryption.receive_share(raw))  # noqa: B023 - timed() runs it now
            server_s += seconds
    result, seconds = timed(decryption.fuse)
    server_s += seconds
    return SimulationResult(
        weighted_sum=result,
        uploaders=uploaders,
        total_weight=decryption.total_weight,
        params=params,
        upload_bytes=len(uploads[0]),
        share_bytes=share_bytes,
        joint_key_bytes=len(joint_bytes),
        client_seconds=client_s / len(uploaders),
        holder_seconds=holder_s / params.num_parties,
        server_seconds=server_s,
    )
