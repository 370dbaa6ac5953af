"""A peer's OpenFHE key tag is checked in Python before the binding reads it.

OpenFHE serialises every key and ciphertext with its key tag (hex digits, a cereal string).
The layout check (``_runtime.Layout``) pins every metadata byte but let the tag's 32 bytes
through as coefficient-like data; the binding's ``GetKeyTag`` then decoded a peer's bytes
as UTF-8 and a non-UTF-8 byte there ended ``ThresholdDecryption.receive_share`` with an
untyped ``UnicodeDecodeError`` (found by the native fuzzer in CI, input 6,272 of 10^4).
A tag byte outside the hex digits is now a :class:`MalformedMessageError` at every decoder
and nothing already accepted is lost. CPython 3.10 with OpenFHE only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import MalformedMessageError

pytestmark = pytest.mark.usefixtures("openfhe")

HEX = b"0123456789abcdefABCDEF"
NOT_HEX = st.integers(0, 255).filter(lambda b: b not in HEX)


@pytest.fixture(scope="module")
def chain(compact_params: Any) -> dict[str, Any]:
    from fedcrypt.he.threshold import KeyHolder, ThresholdServer

    server = ThresholdServer(compact_params)
    holders = [KeyHolder(compact_params, p, server.session) for p in range(3)]
    joint = None
    key_shares = []
    for holder in holders:
        message = holder.generate_key_share(server.key_input_for(holder.party)).to_bytes()
        key_shares.append(message)
        joint = server.receive_key_share(message)
    for holder in holders:
        holder.receive_joint_key(joint.to_bytes())
    rng = np.random.default_rng(11)  # test data, not secrets
    values = [rng.uniform(-1, 1, 64) for _ in range(2)]
    uploads = [holders[i].encrypt(v) for i, v in enumerate(values)]
    aggregate = server.weighted_sum(uploads)
    shares = [holder.partial_decrypt(aggregate).to_bytes() for holder in holders]
    return {"server": server, "uploads": uploads, "aggregate": aggregate, "shares": shares, "key_shares": key_shares,
            "values": values, "params": compact_params}


def _tags(message: bytes, runtime: Any, kind: str) -> list[tuple[int, int]]:
    """Where the key tags of the OpenFHE objects of ``kind`` inside ``message`` lie."""
    from fedcrypt.he.threshold import _runtime as rt

    found = []
    for layout in rt.layouts(runtime)[kind]:
        at = message.find(layout.reference[:64])
        while at >= 0:
            if layout.matches(message[at : at + len(layout.reference)]):
                found += [(at + start, at + stop) for start, stop in layout.text]
            at = message.find(layout.reference[:64], at + 1)
    return sorted(set(found))


def _corrupt(message: bytes, where: tuple[int, int], offset: int, byte: int) -> bytes:
    start, stop = where
    at = start + offset % (stop - start)
    return message[:at] + bytes([byte]) + message[at + 1 :]


def test_every_layout_has_its_key_tag_as_text(chain: dict[str, Any]) -> None:
    """Each learnt layout's text region is the cereal string of the key tag: a u64 length, then hex digits."""
    from fedcrypt.he.threshold import _runtime as rt

    table = rt.layouts(rt.runtime(chain["params"]))
    for kind, kind_layouts in table.items():
        assert kind_layouts, kind
        for layout in kind_layouts:
            assert layout.text, kind
            for start, stop in layout.text:
                assert (start, stop) in layout.variable
                assert int.from_bytes(layout.reference[start - 8 : start], "little") == stop - start
                assert not layout.reference[start:stop].translate(None, HEX)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 1 << 16), byte=NOT_HEX)
def test_decryption_share_with_a_bad_tag_byte_is_refused(chain: dict[str, Any], offset: int, byte: int) -> None:
    from fedcrypt.he.threshold import _runtime as rt

    runtime = rt.runtime(chain["params"])
    decryption = chain["server"].start_decryption(chain["aggregate"])
    decryption.receive_share(chain["shares"][0])
    good = chain["shares"][1]
    tags = _tags(good, runtime, "ciphertext")
    assert tags
    bad = _corrupt(good, tags[offset % len(tags)], offset, byte)
    with pytest.raises(MalformedMessageError):
        decryption.receive_share(bad)
    assert decryption.missing == (1, 2)  # nothing accepted is lost, the holder may still send
    decryption.receive_share(good)
    decryption.receive_share(chain["shares"][2])
    np.testing.assert_allclose(decryption.fuse()[:64], chain["values"][0] + chain["values"][1], atol=1e-3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 1 << 16), byte=NOT_HEX, which=st.sampled_from(["upload", "key_share"]))
def test_upload_and_key_share_with_a_bad_tag_byte_are_refused(chain: dict[str, Any], offset: int, byte: int, which: str) -> None:
    from fedcrypt.he.threshold import ThresholdServer
    from fedcrypt.he.threshold import _runtime as rt

    runtime = rt.runtime(chain["params"])
    if which == "upload":
        total = chain["server"].start()
        total.add(chain["uploads"][0])
        good = chain["uploads"][1]
        tags = _tags(good, runtime, "ciphertext")
        assert tags
        bad = _corrupt(good, tags[offset % len(tags)], offset, byte)
        with pytest.raises(MalformedMessageError):
            total.add(bad)
        assert total.count == 1
        total.add(good)
        assert total.count == 2
    else:
        server = ThresholdServer(chain["params"], chain["server"].session)
        good = chain["key_shares"][0]
        tags = _tags(good, runtime, "public_key")
        assert tags
        bad = _corrupt(good, tags[offset % len(tags)], offset, byte)
        with pytest.raises(MalformedMessageError):
            server.receive_key_share(bad)
        assert server.next_key_holder == 0
        server.receive_key_share(good)
        assert server.next_key_holder == 1
