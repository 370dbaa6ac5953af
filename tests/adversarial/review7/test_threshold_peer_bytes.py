"""Attacker review 7: every peer-controlled byte of a threshold-CKKS message (after 415189e).

Status: the key-tag break below is fixed (every upload and aggregate must carry the joint key's
tag: ``load_ciphertexts(key_tag=...)`` in ``ThresholdSum``, ``ThresholdDecryption`` and
``KeyHolder``); its plan is a positive control on the weakened sum.

415189e made the OpenFHE key tag a ``text`` region of ``_runtime.Layout`` (hex digits only), so
the binding's ``GetKeyTag`` never decodes a non-UTF-8 peer byte. Searched here: every decoder
that hands a peer's OpenFHE bytes to OpenFHE (``ThresholdSum.add`` first and later,
``ThresholdDecryption.receive_share``, ``ThresholdServer.receive_key_share``,
``KeyHolder.generate_key_share`` (running key), ``KeyHolder.receive_joint_key``,
``KeyHolder.partial_decrypt`` (the aggregate), ``_runtime.deserialize_poly`` (key-backup pieces)),
mutating the only variable regions a layout lets through (the 32-byte key tag and the coefficient
words; every other byte is pinned) over positions x byte classes (non-hex: 00, 20, 'G', 7f, 80,
c3, ff; other hex digits: '0', 'f', 'A'; coefficient words: 0, 2^63, 2^64 - 1).

* **No break (typing):** every mutation ends in a ``FedcryptError`` or is accepted; no untyped
  exception, no crash, a refused message leaves the state as it was.
* **Break (availability + framing): a hex-but-wrong key tag in the first upload poisons the sum.**
  ``load_ciphertexts`` checks element count, level, scale degree, ring and scale, not the key tag,
  and ``ThresholdSum.add`` runs no ``EvalAdd`` for the first upload. An upload whose tag is any
  other 32 hex digits is accepted as the first one; every later honest upload then fails
  OpenFHE's ``EvalAdd`` key-tag check and is refused with ``ContextMismatchError`` ("another
  crypto context"). Conditions: one malicious client (any client can produce a valid upload blob;
  the tag is not bound by the blob header or the fingerprint) whose upload is added first (the
  round server without a roster folds in arrival order). Effect: every honest upload of the round
  is refused (``ContextMismatchError``, reported against its sender); one attacker ends the round
  (the holders refuse an aggregate below ``min_contributions``), two colluders using the same
  wrong tag get an aggregate of their two uploads alone, which the holders decrypt (the partials
  carry the aggregate's tag, so nothing looks wrong). Severity: medium (availability and
  framing by one client; exclusion of every honest contribution by two). Fix: ``load_ciphertexts`` (or ``ThresholdSum``) must require
  the joint key's tag (``GetKeyTag`` of the joint key, read from own bytes) on every upload, and
  ``ThresholdDecryption`` likewise; or rewrite the tag region to the joint key's tag.
* Non-first uploads with a wrong tag are refused (typed) and the sum is kept: the control.

CPython 3.10 with OpenFHE only (skips cleanly without it).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from fedcrypt.errors import ContextMismatchError, FedcryptError

openfhe = pytest.importorskip("openfhe", reason="threshold CKKS needs openfhe (CPython 3.10)")

NON_HEX = [0x00, 0x20, ord("G"), 0x7F, 0x80, 0xC3, 0xFF]
OTHER_HEX = [ord("0"), ord("f"), ord("A")]
WORDS = [0, 1 << 63, (1 << 64) - 1]


@pytest.fixture(scope="module")
def chain() -> dict[str, Any]:
    from fedcrypt.he.threshold import KeyHolder, ThresholdParams, ThresholdServer
    from fedcrypt.he.threshold import _runtime as rt

    params = ThresholdParams.preset("compact", num_parties=3, num_clients=8, max_weight=8)
    server = ThresholdServer(params)
    holders = [KeyHolder(params, p, server.session) for p in range(3)]
    joint, key_shares = None, []
    for holder in holders:
        message = holder.generate_key_share(server.key_input_for(holder.party)).to_bytes()
        key_shares.append(message)
        joint = server.receive_key_share(message)
    for holder in holders:
        holder.receive_joint_key(joint.to_bytes())
    rng = np.random.default_rng(7)  # test data, not secrets
    values = [rng.uniform(-1, 1, 64) for _ in range(3)]
    uploads = [holders[i].encrypt(v) for i, v in enumerate(values)]
    aggregate = server.weighted_sum(uploads[:2])
    shares = [h.partial_decrypt(aggregate).to_bytes() for h in holders]
    runtime = rt.runtime(params)
    template = rt.deserialize(runtime, "ciphertext", _objects(uploads[0], runtime, "ciphertext")[0][2], "t")
    key = runtime.context.KeyGen().secretKey
    piece = rt.serialize_poly(runtime, template, runtime.context.ShareKeys(key, 3, 2, 1, "shamir")[2])
    return {"params": params, "server": server, "holders": holders, "key_shares": key_shares, "joint": joint.to_bytes(),
            "uploads": uploads, "values": values, "aggregate": aggregate, "shares": shares, "runtime": runtime, "piece": piece}


def _objects(message: bytes, runtime: Any, kind: str) -> list[tuple[int, Any, bytes]]:
    """(offset, layout, bytes) of every OpenFHE object of ``kind`` inside ``message``."""
    from fedcrypt.he.threshold import _runtime as rt

    found = []
    for layout in rt.layouts(runtime)[kind]:
        at = message.find(layout.reference[:64])
        while at >= 0:
            blob = message[at : at + len(layout.reference)]
            if layout.matches(blob):
                found.append((at, layout, blob))
            at = message.find(layout.reference[:64], at + 1)
    assert found, kind
    return found


def _mutations(message: bytes, runtime: Any, kind: str, tag_values: list[int]):
    """Every (label, mutated message): tag bytes at 3 positions x ``tag_values``, coefficient words."""
    at, layout, _ = _objects(message, runtime, kind)[0]
    (t0, t1), = layout.text
    for pos in (t0, t0 + 15, t1 - 1):
        for value in tag_values:
            i = at + pos
            if message[i] != value:
                yield f"tag[{pos - t0}]={value:#04x}", message[:i] + bytes([value]) + message[i + 1 :]
    for start, stop in layout.variable:
        if (start, stop) in layout.text:
            continue
        for word_at in (start, stop - 8):
            for word in WORDS:
                i = at + word_at
                yield f"coef@{word_at}={word:#x}", message[:i] + word.to_bytes(8, "little") + message[i + 8 :]


def _entry_points(chain: dict[str, Any]) -> dict[str, tuple[bytes, str, Callable[[bytes], None]]]:
    """name -> (honest message, kind of its OpenFHE object, the decoder plus what must hold afterwards)."""
    from fedcrypt.he.threshold import KeyHolder, ThresholdDecryption, ThresholdServer
    from fedcrypt.he.threshold import _runtime as rt

    params, server, runtime = chain["params"], chain["server"], chain["runtime"]
    uploads, session = chain["uploads"], server.session

    def add_second(blob: bytes) -> None:
        total = server.start()
        total.add(uploads[0])
        try:
            total.add(blob)
        except FedcryptError:
            assert total.count == 1
            total.add(uploads[2])  # the sum still takes an honest upload
            raise

    def receive_share(blob: bytes) -> None:
        decryption = ThresholdDecryption(server, chain["aggregate"])
        try:
            decryption.receive_share(blob)
        except FedcryptError:
            for share in chain["shares"]:
                decryption.receive_share(share)
            assert np.allclose(decryption.fuse(), chain["values"][0] + chain["values"][1], atol=1e-3)
            raise

    def key_input(blob: bytes) -> None:
        KeyHolder(params, 1, session).generate_key_share(blob)

    def joint_key(blob: bytes) -> None:
        holder = KeyHolder(params, 0, session)
        holder.generate_key_share()
        holder.receive_joint_key(blob)

    return {
        "ThresholdSum.add(second)": (uploads[1], "ciphertext", add_second),
        "ThresholdDecryption.receive_share": (chain["shares"][1], "ciphertext", receive_share),
        "ThresholdServer.receive_key_share": (chain["key_shares"][0], "public_key", lambda b: ThresholdServer(params, session).receive_key_share(b)),
        "KeyHolder.generate_key_share": (chain["key_shares"][0], "public_key", key_input),
        "KeyHolder.receive_joint_key": (chain["joint"], "public_key", joint_key),
        "KeyHolder.partial_decrypt": (chain["aggregate"], "ciphertext", lambda b: KeyHolder.partial_decrypt(chain["holders"][2], b)),
        "deserialize_poly(key backup)": (chain["piece"], "ciphertext", lambda b: rt.deserialize_poly(runtime, b)),
    }


def _search(chain: dict[str, Any], names=None) -> list[str]:
    findings = []
    for name, (message, kind, decode) in _entry_points(chain).items():
        if names is not None and name not in names:
            continue
        for label, mutated in _mutations(message, chain["runtime"], kind, NON_HEX + OTHER_HEX):
            try:
                decode(mutated)
            except FedcryptError:
                pass
            except Exception as exc:  # the finding: untyped
                findings.append(f"{name} {label}: {type(exc).__name__}: {exc}")
    return findings


def test_no_break_every_decoder_types_every_mutation(chain: dict[str, Any]) -> None:
    assert _search(chain) == []


def test_no_break_share_and_upload_decoders(chain: dict[str, Any]) -> None:
    assert _search(chain, {"ThresholdSum.add(second)", "ThresholdDecryption.receive_share"}) == []


def test_control_the_search_sees_an_untyped_failure(chain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # positive control: without 415189e's text check the same search meets GetKeyTag's UnicodeDecodeError
    from fedcrypt.he.threshold import _runtime as rt

    monkeypatch.setattr(rt.Layout, "matches", lambda self, data: len(data) == len(self.reference))
    found = _search(chain, {"ThresholdDecryption.receive_share"})
    assert any("UnicodeDecodeError" in f for f in found), found


def _retag(blob: bytes, runtime: Any, digit: int = ord("0")) -> bytes:
    at, layout, _ = _objects(blob, runtime, "ciphertext")[0]
    (t0, t1), = layout.text
    return blob[: at + t0] + bytes([digit]) * (t1 - t0) + blob[at + t1 :]


def _poisoned_sum(chain: dict[str, Any]):
    total = chain["server"].start()
    total.add(_retag(chain["uploads"][0], chain["runtime"]))  # the attacker's upload, first
    return total


def test_a_wrong_key_tag_upload_is_refused_not_the_honest_ones(chain: dict[str, Any]) -> None:
    # fixed: every upload must carry the joint key's tag (load_ciphertexts(key_tag=...)), first or not
    total = chain["server"].start()
    with pytest.raises(ContextMismatchError, match="another key"):
        total.add(_retag(chain["uploads"][0], chain["runtime"]))
    assert total.count == 0
    total.add(chain["uploads"][1])
    total.add(chain["uploads"][2])
    assert total.count == 2


def test_an_aggregate_under_another_tag_is_refused_by_holders_and_the_server(chain: dict[str, Any]) -> None:
    from fedcrypt.he.threshold import ThresholdDecryption

    total = chain["server"].start()
    total.add(chain["uploads"][1])
    total.add(chain["uploads"][2])
    aggregate = _retag(total.finish(), chain["runtime"])
    for holder in chain["holders"]:
        with pytest.raises(ContextMismatchError):
            holder.partial_decrypt(aggregate)
    with pytest.raises(ContextMismatchError):
        ThresholdDecryption(chain["server"], aggregate)


def test_control_the_key_tag_poisoning_plan_on_a_weakened_sum(chain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # positive control: without the tag pin (the check as it was) the plan of review 7 works:
    # one wrong-tag first upload gets every honest one refused; two colluders sum alone
    from fedcrypt.errors import ProtocolViolationError
    from fedcrypt.he.threshold import server as server_module

    original = server_module.load_ciphertexts

    def weakened(*args: Any, key_tag: Any = None, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    monkeypatch.setattr(server_module, "load_ciphertexts", weakened)
    total = _poisoned_sum(chain)
    for honest in chain["uploads"][1:]:
        with pytest.raises(ContextMismatchError, match="another crypto context"):
            total.add(honest)
    assert total.count == 1
    lone = total.finish()
    with pytest.raises((ProtocolViolationError, ContextMismatchError)):  # one attacker: the round ends
        chain["holders"][0].partial_decrypt(lone)
    total = _poisoned_sum(chain)
    with pytest.raises(ContextMismatchError):
        total.add(chain["uploads"][1])
    total.add(_retag(chain["uploads"][2], chain["runtime"]))
    assert total.count == 2  # the colluders' aggregate alone (the holders now refuse its tag)
    aggregate = total.finish()
    with pytest.raises(ContextMismatchError):
        chain["holders"][0].partial_decrypt(aggregate)


def test_control_a_wrong_key_tag_after_the_first_upload_is_refused(chain: dict[str, Any]) -> None:
    total = chain["server"].start()
    total.add(chain["uploads"][1])
    with pytest.raises(ContextMismatchError):
        total.add(_retag(chain["uploads"][0], chain["runtime"]))
    total.add(chain["uploads"][2])
    assert total.count == 2
