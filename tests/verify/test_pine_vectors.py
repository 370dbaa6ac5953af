"""Byte-exact checks against draft-chen-cfrg-vdaf-pine's published test vectors (poc/test_vec/01).

The vectors are copied verbatim into ``tests/vectors/pine/``. Every variant whose XOF is
available here is checked (the eight ``Pine40HmacSha256Aes128`` ones); ``Pine64`` and
``Pine128`` use TurboSHAKE128, which neither hashlib nor cryptography provide.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcrypt.verify.field import field_by_name
from fedcrypt.verify.vdaf import VARIANTS, InputShare, PineVdaf, PrepMessage, PrepShare, PublicShare

VECTOR_DIR = Path(__file__).parent.parent / "vectors" / "pine"
VECTORS = sorted(VECTOR_DIR.glob("*.json"))


def _vdaf(name: str, tv: dict) -> PineVdaf:
    variant = VARIANTS[name.rsplit("_", 1)[0]]
    assert field_by_name(tv["field"]) is variant.field
    return PineVdaf.from_variant(
        variant,
        l2_norm_bound=tv["l2_norm_bound"],
        num_frac_bits=tv["num_frac_bits"],
        dimension=tv["dimension"],
        chunk_length=tv["chunk_length"],
        chunk_length_norm_equality=tv["chunk_length_norm_equality"],
        num_proofs=tv["proofs"],
        num_proofs_norm_equality=tv["proofs_norm_equality"],
        alpha=tv["alpha"],
        num_wr_checks=tv["num_wr_checks"],
        num_wr_successes=tv["num_wr_successes"],
        num_shares=tv["shares"],
    )


def test_the_preferred_variant_is_all_there():
    names = {p.stem for p in VECTORS}
    assert {f"Pine40HmacSha256Aes128_{i}" for i in range(8)} <= names


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_byte_exact(path: Path) -> None:
    tv = json.loads(path.read_text())
    vdaf = _vdaf(path.stem, tv)
    F = vdaf.params.field
    verify_key = bytes.fromhex(tv["verify_key"])
    out_shares_by_agg: list[list[np.ndarray]] = [[] for _ in range(tv["shares"])]
    for prep in tv["prep"]:
        nonce = bytes.fromhex(prep["nonce"])
        public, shares = vdaf.shard(prep["measurement"], nonce, bytes.fromhex(prep["rand"]))
        assert public.to_bytes().hex() == prep["public_share"]
        assert [s.to_bytes(vdaf).hex() for s in shares] == prep["input_shares"]

        # the aggregators start from the bytes, through the strict decoders
        public_rx = PublicShare.from_bytes(bytes.fromhex(prep["public_share"]), vdaf)
        states, prep_shares = [], []
        for agg_id, hex_share in enumerate(prep["input_shares"]):
            share = InputShare.from_bytes(bytes.fromhex(hex_share), vdaf, agg_id)
            state, prep_share = vdaf.prep_init(verify_key, agg_id, nonce, public_rx, share)
            states.append(state)
            prep_shares.append(prep_share)
        assert [s.to_bytes(vdaf).hex() for s in prep_shares] == prep["prep_shares"][0]
        rx_shares = [PrepShare.from_bytes(bytes.fromhex(h), vdaf) for h in prep["prep_shares"][0]]
        message = vdaf.prep_shares_to_prep(rx_shares)
        assert [message.to_bytes().hex()] == prep["prep_messages"]
        message = PrepMessage.from_bytes(bytes.fromhex(prep["prep_messages"][0]), vdaf)
        for agg_id, state in enumerate(states):
            out = vdaf.prep_next(state, message)
            assert [F.encode_vec(out[i : i + 1]).hex() for i in range(len(out))] == prep["out_shares"][agg_id]
            out_shares_by_agg[agg_id].append(out)
    agg_shares = [vdaf.aggregate(o) for o in out_shares_by_agg]
    assert [F.encode_vec(a).hex() for a in agg_shares] == tv["agg_shares"]
    assert vdaf.unshard(agg_shares).tolist() == tv["agg_result"]
