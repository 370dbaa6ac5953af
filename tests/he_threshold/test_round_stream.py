"""The streamed DECRYPT of the threshold round with a roster: the server keeps the signed
uploads on disk and sends the confirmed set to every key holder in parts (``SumPart`` ...
``DecryptRequest``), all holders in lockstep; a stand-in decrypts the sum it kept.

Invariants: a streamed holder partially decrypts the very aggregate (bit for bit) the server
fuses and a holder given the whole set in one request decrypts, and the two paths fuse to the
same result within the bound; a holder rebuilt from its state bytes between every message
answers as one that was not; a refused part leaves the holder exactly as it was; a holder that
drops mid-stream is stood in for (t-of-n) by a holder that decrypts the sum it kept, with no
sum in the RecoverRequest, or ends the round (n-of-n); the server holds no upload in memory
between ENCRYPT and DECRYPT and drops its spill file when the round ends. ThresholdSum's
snapshot, resume and merge give the sum of the uploads added one by one, bit for bit.
Real OpenFHE (CPython 3.10; skipped elsewhere, see conftest.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import (
    EncodingError,
    FedcryptError,
    HonestButCuriousWarning,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.he.threshold.round import (
    DecryptRequest,
    PartialDecryption,
    RecoverRequest,
    ReleaseRequest,
    Stage,
    SumAck,
    SumPart,
    ThresholdClient,
    ThresholdRoundServer,
    fedavg_error_bound,
)

pytestmark = pytest.mark.usefixtures("openfhe")
sys.path.insert(0, str(Path(__file__).parent))

from _round_harness import Federation, M  # noqa: E402


def _upload_bytes(fed: Federation) -> int:
    """The size of one upload blob (a first round pins the session; its uploads have the size of every later one)."""
    _, log = fed.run(1)
    sizes = {len(u.blob) for u in log.replies[Stage.ENCRYPT].values()}
    return max(sizes)


def _server(fed: Federation, round_id: int, part_bytes: int) -> ThresholdRoundServer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        return ThresholdRoundServer(fed.config, sorted(fed.clients), round_id=round_id, session=fed.session, part_bytes=part_bytes)


def _drive(fed: Federation, server: ThresholdRoundServer, *, via_state: bool, drop: dict[int, int] | None = None) -> dict[str, Any]:
    """Run the round; ``drop``: node -> the DECRYPT request (0-based, counted per node) it drops at.
    Returns every request per stage and node, and each holder's state before its first DECRYPT request."""
    seen: dict[Stage, dict[int, list[Any]]] = {}
    before: dict[int, bytes] = {}
    requests = server.begin()
    while requests:
        stage = server.stage
        for node in sorted(requests):
            message = requests[node]
            seen.setdefault(stage, {}).setdefault(node, []).append(message)
            if stage is Stage.DECRYPT:
                before.setdefault(node, fed.clients[node].to_state_bytes())
                if drop is not None and node in drop and drop[node] <= len(seen[stage][node]) - 1:
                    continue
            if stage is Stage.ENCRYPT:
                fed.clients[node].set_input(fed.inputs[node], fed.weights[node])
            client = fed.clients[node]
            if via_state:
                client = ThresholdClient.from_state_bytes(client.to_state_bytes(), config=fed.config, identity=fed.identity(node))
            reply = client.handle(message.to_bytes())
            fed.clients[node] = client
            server.receive(reply.to_bytes(), sender=node)
        requests = server.end_stage()
    return {"requests": seen, "before": before}


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(per_part=st.integers(1, 3), via_state=st.booleans(), seed=st.integers(0, 2**16))
def test_streamed_partial_decryptions_fuse_to_the_one_request_result(per_part: int, via_state: bool, seed: int) -> None:
    fed = Federation(roster=True, seed=seed)
    size = _upload_bytes(fed)
    server = _server(fed, 2, size * per_part + size // 2)  # ``per_part`` uploads per part
    log = _drive(fed, server, via_state=via_state)
    result, n = server.result, len(fed.clients)
    parts = (n + per_part - 1) // per_part
    decrypt = log["requests"][Stage.DECRYPT]
    assert sorted(decrypt) == sorted(fed.clients)  # every holder, in lockstep
    for requests in decrypt.values():
        assert len(requests) == parts
        assert all(isinstance(r, SumPart) for r in requests[:-1]) and isinstance(requests[-1], DecryptRequest)
        assert requests[-1].part == parts - 1
        assert sum(len(r.uploads) for r in requests) == n
    # the same set in one request, to every holder as it stood before its first part
    digest = hashlib.sha256(server._aggregate).digest()
    decryption = server._crypto.start_decryption(server._aggregate)
    for node, streamed in sorted(decrypt.items()):
        whole = DecryptRequest(2, node, b"", tuple(u for r in streamed for u in r.uploads))
        fresh = ThresholdClient.from_state_bytes(log["before"][node], config=fed.config, identity=fed.identity(node))
        reply = fresh.handle(whole)
        assert isinstance(reply, PartialDecryption)
        assert fresh._kept == fed.clients[node]._kept  # the very aggregate the streamed holder kept
        decryption.receive_share(reply.share)  # refused unless it is a share of the server's aggregate (its digest)
        assert fed.clients[node]._kept[2] == server._aggregate and hashlib.sha256(fresh._kept[2]).digest() == digest
    one_request = decryption.fuse() / M
    bound = fedavg_error_bound(fed.config.params, list(fed.weights.values()), M)
    expected = fed.expected_mean(sorted(fed.clients))
    assert np.max(np.abs(result.mean - expected)) <= bound
    assert np.max(np.abs(one_request[:-1] / one_request[-1] - expected)) <= bound
    assert server._spill is not None and len(server._spill) == 0  # dropped with the round


def test_a_holder_that_drops_mid_stream_is_stood_in_for_with_the_sum_the_stand_in_kept() -> None:
    fed = Federation(roster=True, recovery=2, seed=3)
    _upload_bytes(fed)
    server = _server(fed, 2, 1)  # one upload per part: three parts
    log = _drive(fed, server, via_state=True, drop={102: 1})
    assert server.report.dropped.get(102) == "DECRYPT" and server.report.stood_in == {102: 100}
    assert len(log["requests"][Stage.DECRYPT][102]) == 2 and len(log["requests"][Stage.DECRYPT][100]) == 3
    (recover,) = log["requests"][Stage.RECOVER][100]
    assert isinstance(recover, RecoverRequest) and recover.aggregate == b""  # no upload, no sum: the stand-in's own
    bound = fedavg_error_bound(fed.config.params, list(fed.weights.values()), M)
    assert np.max(np.abs(server.result.mean - fed.expected_mean(sorted(fed.clients)))) <= bound
    assert fed.clients[102]._stream is not None and fed.clients[102]._stream[3] == 1  # it stopped after part 0


def test_without_recovery_a_holder_that_drops_mid_stream_ends_the_round() -> None:
    fed = Federation(roster=True, recovery=0, seed=4)
    _upload_bytes(fed)
    server = _server(fed, 2, 1)
    with pytest.raises(RoundAbortedError, match="dropped"):
        _drive(fed, server, via_state=False, drop={101: 1})
    assert server.stage is Stage.ABORTED and len(server._spill) == 0


@pytest.fixture
def streaming() -> dict[str, Any]:
    """A round stopped at DECRYPT with one upload per part; the holders' part-0 requests."""
    fed = Federation(roster=True, seed=9)
    _upload_bytes(fed)
    server = _server(fed, 2, 1)
    requests = server.begin()
    while server.stage is not Stage.DECRYPT:
        for node in sorted(requests):
            if server.stage is Stage.ENCRYPT:
                fed.clients[node].set_input(fed.inputs[node], fed.weights[node])
            server.receive(fed.clients[node].handle(requests[node]), sender=node)
        requests = server.end_stage()
    return {"fed": fed, "server": server, "requests": requests}


def _refused(client: ThresholdClient, message: Any, error: type[FedcryptError], match: str) -> None:
    before = client.to_state_bytes()
    with pytest.raises(error, match=match):
        client.handle(message)
    assert client.to_state_bytes() == before


def test_holder_refuses_parts_out_of_order_or_off_the_set(streaming: dict[str, Any]) -> None:
    fed, server, requests = streaming["fed"], streaming["server"], streaming["requests"]
    node, part0 = min(requests.items())
    client = fed.clients[node]
    assert isinstance(part0, SumPart) and len(part0.uploads) == 1 and len(part0.entries) == 3
    uploads = tuple(u for i in range(3) for u in server._request(node, i).uploads)  # read back from the spill file
    # a part before part 0, part 0 with the whole set in it, an upload that is not the entry it stands for
    _refused(client, dataclasses.replace(part0, index=1, entries=()), UnexpectedMessageError, "not the next part")
    _refused(client, dataclasses.replace(part0, uploads=uploads), ProtocolViolationError, "carries the whole set")
    _refused(client, dataclasses.replace(part0, uploads=uploads[1:2]), ProtocolViolationError, "not the set's entry")
    _refused(client, dataclasses.replace(part0, entries=part0.entries[:1]), ProtocolViolationError, "fewer than min_contributions")
    unconfirmed = dataclasses.replace(part0, uploads=(dataclasses.replace(part0.uploads[0], confirmation=b""),))
    _refused(client, unconfirmed, FedcryptError, "did not confirm")
    # the right part 0, then part 2 before part 1, and a last part that leaves an upload out
    assert isinstance(client.handle(part0), SumAck)
    _refused(client, SumPart(2, node, 2, (), uploads[2:3]), UnexpectedMessageError, "not the next part")
    _refused(client, DecryptRequest(2, node, b"", uploads[1:2], 1), ProtocolViolationError, "leaves 1 of the set")
    _refused(client, SumPart(2, node, 1, (), uploads[1:3]), ProtocolViolationError, "carries the set's last upload")
    _refused(client, SumPart(2, node, 1, (), uploads[2:3]), ProtocolViolationError, "not the set's entry")
    # part 0 again starts the stream again; the last part ends it with the partial decryption
    assert isinstance(client.handle(part0), SumAck)
    assert isinstance(client.handle(SumPart(2, node, 1, (), uploads[1:2])), SumAck)
    assert isinstance(client.handle(DecryptRequest(2, node, b"", uploads[2:3], 2)), PartialDecryption)
    assert client._stream is None and client._kept is not None and client._kept[2] == server._aggregate
    _refused(client, DecryptRequest(2, node, b"", uploads), UnexpectedMessageError, "already released")
    _refused(client, part0, UnexpectedMessageError, "already released")


def test_a_stand_in_refuses_a_recover_request_of_a_round_it_kept_no_sum_of(streaming: dict[str, Any]) -> None:
    fed, server = streaming["fed"], streaming["server"]
    stand_in = fed.clients[100]
    released = fed.clients[101].handle(ReleaseRequest(2, 101, 2, 0)).backup
    recover = RecoverRequest(2, 100, 2, (released,))
    assert stand_in._kept is None  # round 1's sum went with its upload for round 2; round 2 is not decrypted yet
    _refused(stand_in, recover, UnexpectedMessageError, "kept no sum of round 2")
    _refused(stand_in, dataclasses.replace(recover, round_id=1), UnexpectedMessageError, "kept no sum of round 1")
    _refused(stand_in, dataclasses.replace(recover, aggregate=server._aggregate), ProtocolViolationError, "the sum it made itself")


def test_server_refuses_acknowledgements_and_partials_off_its_stream(streaming: dict[str, Any]) -> None:
    fed, server, requests = streaming["fed"], streaming["server"], streaming["requests"]
    node = min(requests)
    with pytest.raises(ProtocolViolationError, match="not the part sent"):
        server.receive(SumAck(2, node, 1), sender=node)
    with pytest.raises(ProtocolViolationError, match="before the last part"):
        server.receive(PartialDecryption(2, node, b"\x00"), sender=node)
    assert node not in server.received
    server.receive(fed.clients[node].handle(requests[node]), sender=node)  # the honest ack is still taken
    assert node in server.received


def test_server_keeps_no_upload_in_memory_and_drops_its_spill_file(streaming: dict[str, Any]) -> None:
    server = streaming["server"]
    assert all(not isinstance(v, bytes) or len(v) <= 64 for entry in server._uploads.values() for v in entry)
    assert len(server._spill) == 3 and server._parts == [(100,), (101,), (102,)]
    assert {type(m) for m in streaming["requests"].values()} == {SumPart}
    with pytest.raises(RoundAbortedError):
        server.end_stage()  # nobody answers part 0: every holder drops
    assert server.stage is Stage.ABORTED and len(server._spill) == 0


# ---------------------------------------------------------------------------- ThresholdSum
@pytest.fixture(scope="module")
def sums() -> dict[str, Any]:
    fed = Federation(roster=True, seed=31)
    _, log = fed.run(1)
    holder = fed.clients[100]._holder
    blobs = [u.blob for _, u in sorted(log.replies[Stage.ENCRYPT].items())]
    return {"params": fed.config.params, "fp": holder.fingerprint, "tag": holder.key_tag, "blobs": blobs}


def _new(sums: dict[str, Any], *blobs: bytes) -> Any:
    from fedcrypt.he.threshold import ThresholdSum

    total = ThresholdSum.under(sums["params"], sums["fp"], sums["tag"])
    for blob in blobs:
        total.add(blob, M)
    return total


def test_snapshot_resume_and_merge_give_the_sum_of_the_uploads_added_one_by_one(sums: dict[str, Any]) -> None:
    from fedcrypt.he.threshold import ThresholdSum

    a, b, c = sums["blobs"]
    reference = _new(sums, a, b, c).finish()
    first = _new(sums, a)
    resumed = ThresholdSum.resume(sums["params"], sums["fp"], sums["tag"], first.to_state_bytes())
    assert resumed.to_state_bytes() == first.to_state_bytes() and resumed.count == 1
    resumed.merge(_new(sums, b, c))
    assert resumed.finish() == reference
    copy_source = _new(sums, a, b)
    twin = copy_source.copy()
    twin.add(c, M)
    assert twin.finish() == reference and copy_source.count == 2  # the copy's add left the original as it was


def test_merge_and_resume_refuse_without_changing_either_sum(sums: dict[str, Any]) -> None:
    from fedcrypt.he.threshold import ThresholdSum

    a, b, c = sums["blobs"]
    total, other = _new(sums, a, b), _new(sums, b, c)
    before = (total.to_state_bytes(), other.to_state_bytes())
    with pytest.raises(UnexpectedMessageError, match="replay"):
        total.merge(other)
    assert (total.to_state_bytes(), other.to_state_bytes()) == before
    with pytest.raises(LocalProtocolError, match="empty"):
        total.merge(_new(sums))
    done = _new(sums, c)
    done.finish()
    with pytest.raises(LocalProtocolError, match="finished"):
        total.merge(done)
    with pytest.raises(EncodingError):
        ThresholdSum.under(sums["params"], sums["fp"], sums["tag"], length=3).merge(_new(sums, c))
    state = total.to_state_bytes()
    with pytest.raises(MalformedMessageError):
        ThresholdSum.resume(sums["params"], sums["fp"], sums["tag"], state[:-1])
    with pytest.raises(MalformedMessageError, match="do not match"):
        ThresholdSum.resume(sums["params"], sums["fp"], sums["tag"], state[:-64] + state[-32:] + state[-64:-32])  # guard unsorted
