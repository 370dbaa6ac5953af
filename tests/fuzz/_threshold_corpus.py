"""Threshold-CKKS (OpenFHE) corpus and decoders for the native fuzzer (CPython 3.10 only).

The parent (:func:`threshold_setup`) runs a key chain of three holders, one upload, one
aggregate and one decryption share, and sends the child the public transcript (parameters,
session, the holders' key-share messages, the aggregate); the child (:func:`decoders`)
replays the key shares into a fresh :class:`ThresholdServer`, so it holds the same joint
key, and exposes every decoder that takes a peer's OpenFHE bytes.
"""

from __future__ import annotations

import json
from typing import Any

_BANNER = 64  # the first bytes of an OpenFHE object of one kind: fixed (cereal header, parameters)


def _transcript():
    import numpy as np

    from fedcrypt.he.threshold import KeyHolder, ThresholdParams, ThresholdServer

    params = ThresholdParams.preset("compact", num_parties=3, num_clients=8, max_weight=8)
    server = ThresholdServer(params)
    holders = [KeyHolder(params, p, server.session) for p in range(3)]
    shares, joint = [], None
    for holder in holders:
        message = holder.generate_key_share(server.key_input_for(holder.party)).to_bytes()
        shares.append(message)
        joint = server.receive_key_share(message)
    for holder in holders:
        holder.receive_joint_key(joint.to_bytes())
    rng = np.random.default_rng(5)  # test data, not secrets
    upload = holders[0].encrypt(rng.uniform(-1, 1, 100))
    aggregate = server.weighted_sum([upload, holders[0].encrypt(rng.uniform(-1, 1, 100))])
    share = holders[1].partial_decrypt(aggregate).to_bytes()
    return params, server, shares, upload, aggregate, share


def _object_shape(message: bytes, runtime: Any, kind: str):
    """A Shape over ``message`` whose fields are the metadata words of its first OpenFHE object."""
    from fedcrypt.he.threshold import _runtime as rt

    from ._mutate import Shape

    for layout in rt.layouts(runtime)[kind]:
        at = message.find(layout.reference[:_BANNER])
        if at >= 0 and layout.matches(message[at : at + len(layout.reference)]):
            break
    else:
        raise AssertionError(f"no {kind} layout inside the message")
    fixed_until = layout.variable[0][0] if layout.variable else len(layout.reference)
    fields = [(at + k, 4) for k in range(0, fixed_until, 4)] + [(at + k, 8) for k in range(0, fixed_until, 8)]
    last = layout.variable[-1][1] if layout.variable else 0
    fields += [(at + k, 8) for k in range(last, len(layout.reference) - 7, 4)]
    fields += [(at + start - 8, 8) for start, _ in layout.variable]  # the length before each region
    fields += [(at + k, 8) for start, stop in layout.text for k in range(start, stop, 8)]  # the key tag's bytes
    words = (at + layout.variable[1][0], (layout.variable[1][1] - layout.variable[1][0]) // 8) if len(layout.variable) > 1 else (0, 0)
    return Shape(message, fields + [(0, 4), (4, 1)], [], words, None, None, [])


def _bare(message: bytes, runtime: Any, kind: str) -> bytes:
    """The first OpenFHE object of ``kind`` inside ``message``."""
    from fedcrypt.he.threshold import _runtime as rt

    for layout in rt.layouts(runtime)[kind]:
        at = message.find(layout.reference[:_BANNER])
        if at >= 0 and layout.matches(message[at : at + len(layout.reference)]):
            return message[at : at + len(layout.reference)]
    raise AssertionError(f"no {kind} inside the message")


def threshold_setup():
    from fedcrypt.he.threshold import _runtime as rt

    from ._native import Setup

    params, server, shares, upload, aggregate, share = _transcript()
    runtime = rt.runtime(params)
    joint = server.joint_key_message().to_bytes()
    public_key = joint
    upload_shape = _object_shape(upload, runtime, "ciphertext")
    share_shape = _object_shape(share, runtime, "ciphertext")
    key_shape = _object_shape(shares[0], runtime, "public_key")
    pk_shape = _object_shape(_bare(public_key, runtime, "public_key"), runtime, "public_key")
    ct_shape = _object_shape(_bare(upload, runtime, "ciphertext"), runtime, "ciphertext")
    partial_shape = _object_shape(_bare(share, runtime, "ciphertext"), runtime, "ciphertext")
    secret = json.dumps({"params": params.to_bytes().hex(), "session": server.session.hex(),
                         "shares": [s.hex() for s in shares], "aggregate": aggregate.hex()}).encode()
    shapes = {
        "ThresholdSum.add": [upload_shape],
        "ThresholdDecryption.receive_share": [share_shape],
        "ThresholdServer.receive_key_share": [key_shape],
        "deserialize.ciphertext": [ct_shape, partial_shape],
        "deserialize.public_key": [pk_shape],
    }
    corpus = {"upload": upload, "aggregate": aggregate, "share": share, "key_share": shares[0], "public_key": public_key}
    return Setup("threshold", secret, corpus, shapes)


def decoders(secret: bytes) -> dict:
    from fedcrypt.he.threshold import _runtime as rt
    from fedcrypt.he.threshold import ThresholdParams, ThresholdServer

    bundle = json.loads(secret)
    params = ThresholdParams.from_bytes(bytes.fromhex(bundle["params"]))
    session = bytes.fromhex(bundle["session"])
    server = ThresholdServer(params, session)
    for share in bundle["shares"]:
        server.receive_key_share(bytes.fromhex(share))
    aggregate = bytes.fromhex(bundle["aggregate"])
    runtime = rt.runtime(params)

    def add(blob: bytes) -> None:
        total = server.start()
        try:
            total.add(blob)
        except Exception:
            assert total.count == 0, "a rejected upload changed the sum"
            raise

    def receive_share(blob: bytes) -> None:
        server.start_decryption(aggregate).receive_share(blob)

    def receive_key_share(blob: bytes) -> None:
        ThresholdServer(params, session).receive_key_share(blob)

    return {
        "ThresholdSum.add": add,
        "ThresholdDecryption.receive_share": receive_share,
        "ThresholdServer.receive_key_share": receive_key_share,
        "deserialize.ciphertext": lambda b: rt.deserialize(runtime, "ciphertext", b, "fuzz"),
        "deserialize.public_key": lambda b: rt.deserialize(runtime, "public_key", b, "fuzz"),
    }
