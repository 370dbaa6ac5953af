"""The PINE VDAF: client sharding, aggregator preparation, aggregation, unsharding.

Prio3-shaped (draft-irtf-cfrg-vdaf-11, Section 7) with two joint randomnesses, as
draft-chen-cfrg-vdaf-pine-02 Section 5 describes and its test vectors fix:

* **wraparound joint randomness**: parts ``XOF.derive_seed(wr_blind_j, dst(10),
  byte(j) || nonce || enc(share_j[: d + 2b]))``; seed ``derive_seed(0^S, dst(9), parts)``;
  the XOF ``Xof(seed, dst(8), b"")`` streams the ``{-1,0,1}`` vectors;
* **verification joint randomness**: parts from the whole encoded-measurement share with
  ``dst(7)``, seed with ``dst(6)``, ``3 * num_proofs`` elements from ``dst(3)`` and binder
  ``byte(num_proofs)``.

``dst(usage) = byte(VERSION=1) || be32(vdaf_id) || be16(usage)``. Proofs: first
``num_proofs_norm_equality`` of the norm-equality circuit, then ``num_proofs`` of the main
circuit; prover randomness from ``dst(4)``, query randomness from the verification key with
``dst(5)`` and binder ``byte(PNE) || byte(P) || nonce``; helper shares from seeds with
``dst(1)`` (measurement, binder ``byte(j)``) and ``dst(2)`` (proofs, binder
``byte(PNE) || byte(P) || byte(j)``).

This module is the algorithm layer (pure functions of bytes and parameters, VDAF-style); the
round objects with stages and replay protection build on it. Secrets (seeds, blinds) arrive
as bytes from the caller; :func:`PineVdaf.shard_random` draws them from ``os.urandom``.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fedcrypt.errors import MalformedMessageError, VerificationError

from .field import Field32, Field40, Field64, PrimeField
from .flp import Flp
from .pine import (
    PineNormEqualityCircuit,
    PineParams,
    PineValidCircuit,
    WraparoundRetry,
    decode_gradient,
    encode_gradient,
    encode_norm,
    encode_wraparound,
    wraparound_dot_products,
)
from .xof import Xof, XofHmacSha256Aes128

__all__ = [
    "PineVdaf",
    "PineVariant",
    "VARIANTS",
    "VerificationError",
    "PublicShare",
    "InputShare",
    "PrepShare",
    "PrepMessage",
    "PrepState",
    "MeasurementEncoder",
    "HONEST_ENCODER",
    "NONCE_SIZE",
]

VERSION = 1
NONCE_SIZE = 16

USAGE_MEAS_SHARE = 1
USAGE_PROOF_SHARE = 2
USAGE_JOINT_RANDOMNESS = 3
USAGE_PROVE_RANDOMNESS = 4
USAGE_QUERY_RANDOMNESS = 5
USAGE_JOINT_RAND_SEED = 6
USAGE_JOINT_RAND_PART = 7
USAGE_WR_JOINT_RANDOMNESS = 8
USAGE_WR_JOINT_RAND_SEED = 9
USAGE_WR_JOINT_RAND_PART = 10


@dataclass(frozen=True, slots=True)
class PineVariant:
    """A named instantiation: field, XOF, algorithm id and default proof counts."""

    name: str
    field: PrimeField
    xof: type[Xof]
    vdaf_id: int
    num_proofs: int
    num_proofs_norm_equality: int = 1


#: Variants whose XOF is available here (the TurboSHAKE128 ones, Pine64 and Pine128, are not).
VARIANTS: dict[str, PineVariant] = {
    v.name: v
    for v in (
        PineVariant("Pine40HmacSha256Aes128", Field40, XofHmacSha256Aes128, 0xFFFF1006, 4),
        PineVariant("Pine32HmacSha256Aes128", Field32, XofHmacSha256Aes128, 0xFFFF1005, 5),
        PineVariant("Pine64HmacSha256Aes128", Field64, XofHmacSha256Aes128, 0xFFFF1004, 2),
    )
}


# ---------------------------------------------------------------------------- messages
@dataclass(frozen=True, slots=True)
class PublicShare:
    """The client's joint-randomness parts, one per aggregator, for both randomnesses."""

    wr_parts: tuple[bytes, ...]
    vf_parts: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return b"".join(self.wr_parts) + b"".join(self.vf_parts)

    @classmethod
    def from_bytes(cls, data: bytes, vdaf: "PineVdaf") -> "PublicShare":
        s, n = vdaf.xof.SEED_SIZE, vdaf.params.num_shares
        if len(data) != 2 * n * s:
            raise MalformedMessageError(f"public share must be {2 * n * s} bytes, got {len(data)}")
        seeds = tuple(bytes(data[i : i + s]) for i in range(0, len(data), s))
        return cls(seeds[:n], seeds[n:])


@dataclass(frozen=True, slots=True)
class InputShare:
    """One aggregator's input share. Leader (id 0): field vectors; helpers: seeds.

    Everything here is secret: ``repr`` shows only the aggregator id.
    """

    agg_id: int
    meas_share: np.ndarray | bytes = field(repr=False)
    proofs_share: np.ndarray | bytes = field(repr=False)
    wr_blind: bytes = field(repr=False)
    vf_blind: bytes = field(repr=False)

    def to_bytes(self, vdaf: "PineVdaf") -> bytes:
        F = vdaf.params.field
        if self.agg_id == 0:
            assert isinstance(self.meas_share, np.ndarray) and isinstance(self.proofs_share, np.ndarray)  # the leader's: vectors
            head = F.encode_vec(self.meas_share) + F.encode_vec(self.proofs_share)
        else:
            assert not isinstance(self.meas_share, np.ndarray) and not isinstance(self.proofs_share, np.ndarray)  # a helper's: seeds
            head = bytes(self.meas_share) + bytes(self.proofs_share)
        return head + self.wr_blind + self.vf_blind

    @classmethod
    def from_bytes(cls, data: bytes, vdaf: "PineVdaf", agg_id: int) -> "InputShare":
        F, s = vdaf.params.field, vdaf.xof.SEED_SIZE
        if not 0 <= agg_id < vdaf.params.num_shares:
            raise ValueError(f"agg_id must be in [0, {vdaf.params.num_shares})")
        if agg_id == 0:
            m = vdaf.params.meas_len * F.encoded_size
            p = vdaf.proofs_len * F.encoded_size
            if len(data) != m + p + 2 * s:
                raise MalformedMessageError(f"leader input share must be {m + p + 2 * s} bytes, got {len(data)}")
            meas = F.decode_vec(data[:m])
            proofs = F.decode_vec(data[m : m + p])
            rest = data[m + p :]
            return cls(0, meas, proofs, bytes(rest[:s]), bytes(rest[s:]))
        if len(data) != 4 * s:
            raise MalformedMessageError(f"helper input share must be {4 * s} bytes, got {len(data)}")
        parts = [bytes(data[i : i + s]) for i in range(0, 4 * s, s)]
        return cls(agg_id, *parts)


@dataclass(frozen=True, slots=True)
class PrepShare:
    """An aggregator's verifier shares and its two recomputed joint-randomness parts."""

    verifiers_share: np.ndarray = field(repr=False)
    wr_part: bytes = field(repr=False)
    vf_part: bytes = field(repr=False)

    def to_bytes(self, vdaf: "PineVdaf") -> bytes:
        return vdaf.params.field.encode_vec(self.verifiers_share) + self.wr_part + self.vf_part

    @classmethod
    def from_bytes(cls, data: bytes, vdaf: "PineVdaf") -> "PrepShare":
        F, s = vdaf.params.field, vdaf.xof.SEED_SIZE
        v = vdaf.verifiers_len * F.encoded_size
        if len(data) != v + 2 * s:
            raise MalformedMessageError(f"prep share must be {v + 2 * s} bytes, got {len(data)}")
        return cls(F.decode_vec(data[:v]), bytes(data[v : v + s]), bytes(data[v + s :]))


@dataclass(frozen=True, slots=True)
class PrepMessage:
    """The two joint-randomness seeds every aggregator must have computed."""

    wr_seed: bytes
    vf_seed: bytes

    def to_bytes(self) -> bytes:
        return self.wr_seed + self.vf_seed

    @classmethod
    def from_bytes(cls, data: bytes, vdaf: "PineVdaf") -> "PrepMessage":
        s = vdaf.xof.SEED_SIZE
        if len(data) != 2 * s:
            raise MalformedMessageError(f"prep message must be {2 * s} bytes, got {len(data)}")
        return cls(bytes(data[:s]), bytes(data[s:]))


@dataclass(frozen=True, slots=True)
class PrepState:
    """What an aggregator keeps between ``prep_init`` and ``prep_next``."""

    out_share: np.ndarray = field(repr=False)
    wr_seed: bytes = field(repr=False)
    vf_seed: bytes = field(repr=False)


# ---------------------------------------------------------------------------- the VDAF
class MeasurementEncoder:
    """How a client turns its encoded gradient into PINE's measurement (the honest way).

    :meth:`norm_bits` gives the ``v`` and ``u`` bits of the squared norm (refusing a norm
    above the bound); :meth:`wraparound_bits` the bits and success flags of the wraparound
    checks (raising :class:`WraparoundRetry` when too few pass). A subclass that lies is
    how :mod:`fedcrypt.testing` plays a malicious client.
    """

    def norm_bits(self, params: PineParams, gradient: np.ndarray) -> np.ndarray:
        return encode_norm(params, gradient)

    def wraparound_bits(self, params: PineParams, wr_results: np.ndarray) -> np.ndarray:
        return encode_wraparound(params, wr_results)


HONEST_ENCODER = MeasurementEncoder()


class PineVdaf:
    """PINE over one parameter set and XOF (see the module docstring for every derivation)."""

    def __init__(self, params: PineParams, xof: type[Xof] = XofHmacSha256Aes128, vdaf_id: int = 0xFFFF1006) -> None:
        if not 0 <= vdaf_id < 1 << 32:
            raise ValueError("vdaf_id must fit in 32 bits")
        self.params = params
        self.xof = xof
        self.vdaf_id = vdaf_id
        self.flp_ne = Flp(PineNormEqualityCircuit(params), queries=params.norm_equality_queries)
        self.flp = Flp(PineValidCircuit(params))
        p = params
        self.proofs_len = self.flp_ne.proof_len * p.num_proofs_norm_equality + self.flp.proof_len * p.num_proofs
        self.verifiers_len = self.flp_ne.verifier_len * p.num_proofs_norm_equality + self.flp.verifier_len * p.num_proofs
        self.rand_size = (1 + 2 * (p.num_shares - 1) + 2 * p.num_shares) * xof.SEED_SIZE
        self.verify_key_size = xof.SEED_SIZE

    @classmethod
    def from_variant(cls, variant: str | PineVariant, **kwargs) -> "PineVdaf":
        v = VARIANTS[variant] if isinstance(variant, str) else variant
        kwargs.setdefault("num_proofs", v.num_proofs)
        kwargs.setdefault("num_proofs_norm_equality", v.num_proofs_norm_equality)
        return cls(PineParams(field=v.field, **kwargs), v.xof, v.vdaf_id)

    # ------------------------------------------------------------------ derivations
    def dst(self, usage: int) -> bytes:
        return bytes([VERSION]) + self.vdaf_id.to_bytes(4, "big") + usage.to_bytes(2, "big")

    def _proof_binder(self) -> bytes:
        """``byte(PNE) || byte(P)``, then ``byte(queries)`` when the norm-equality proofs are
        tested at more than one point (the draft's binder is unchanged otherwise)."""
        p = self.params
        extra = bytes([p.norm_equality_queries]) if p.norm_equality_queries > 1 else b""
        return bytes([p.num_proofs_norm_equality, p.num_proofs]) + extra

    def helper_meas_share(self, agg_id: int, seed: bytes, length: int) -> np.ndarray:
        return self.xof.expand_into_vec(self.params.field, seed, self.dst(USAGE_MEAS_SHARE), bytes([agg_id]), length)

    def helper_proofs_share(self, agg_id: int, seed: bytes) -> np.ndarray:
        return self.xof.expand_into_vec(self.params.field, seed, self.dst(USAGE_PROOF_SHARE), self._proof_binder() + bytes([agg_id]), self.proofs_len)

    def joint_rand_part(self, agg_id: int, blind: bytes, share: np.ndarray, nonce: bytes, usage: int) -> bytes:
        binder = bytes([agg_id]) + nonce + self.params.field.encode_vec(share)
        return self.xof.derive_seed(blind, self.dst(usage), binder)

    def joint_rand_seed(self, parts: list[bytes] | tuple[bytes, ...], usage: int) -> bytes:
        return self.xof.derive_seed(bytes(self.xof.SEED_SIZE), self.dst(usage), b"".join(parts))

    def wr_xof(self, seed: bytes) -> Xof:
        return self.xof(seed, self.dst(USAGE_WR_JOINT_RANDOMNESS), b"")

    def vf_joint_rands(self, seed: bytes) -> np.ndarray:
        return self.xof.expand_into_vec(
            self.params.field,
            seed,
            self.dst(USAGE_JOINT_RANDOMNESS),
            bytes([self.params.num_proofs]),
            self.flp.joint_rand_len * self.params.num_proofs,
        )

    def prove_rands(self, seed: bytes) -> np.ndarray:
        p = self.params
        n = self.flp_ne.prove_rand_len * p.num_proofs_norm_equality + self.flp.prove_rand_len * p.num_proofs
        return self.xof.expand_into_vec(p.field, seed, self.dst(USAGE_PROVE_RANDOMNESS), self._proof_binder(), n)

    def query_rands(self, verify_key: bytes, nonce: bytes) -> np.ndarray:
        p = self.params
        n = self.flp_ne.query_rand_len * p.num_proofs_norm_equality + self.flp.query_rand_len * p.num_proofs
        return self.xof.expand_into_vec(p.field, verify_key, self.dst(USAGE_QUERY_RANDOMNESS), self._proof_binder() + nonce, n)

    def _shares_and_parts(
        self, meas: np.ndarray, helper_meas_seeds: Sequence[bytes], blinds: Sequence[bytes], nonce: bytes, usage: int
    ) -> tuple[np.ndarray, list[bytes]]:
        """Leader share of ``meas`` and every aggregator's joint-randomness part."""
        F = self.params.field
        leader = meas
        parts: list[bytes] = [b""]
        for j, seed in enumerate(helper_meas_seeds, start=1):
            share = self.helper_meas_share(j, seed, len(meas))
            leader = F.sub(leader, share)
            parts.append(self.joint_rand_part(j, blinds[j], share, nonce, usage))
        parts[0] = self.joint_rand_part(0, blinds[0], leader, nonce, usage)
        return leader, parts

    # ------------------------------------------------------------------ client
    def shard(self, measurement, nonce: bytes, rand: bytes) -> tuple[PublicShare, list[InputShare]]:
        """Encode, prove and share one gradient (deterministic in ``rand``).

        Raises:
            EncodingError: the gradient is not encodable or its norm exceeds the bound.
            WraparoundRetry: this ``rand`` makes too few wraparound checks pass.
        """
        return self.shard_encoded(encode_gradient(self.params, measurement), nonce, rand)

    def shard_encoded(
        self, gradient: np.ndarray, nonce: bytes, rand: bytes, *, encoder: "MeasurementEncoder | None" = None
    ) -> tuple[PublicShare, list[InputShare]]:
        """:meth:`shard` of a gradient already encoded as ``d`` field elements.

        ``encoder`` builds the norm and wraparound parts of the measurement (default: the
        honest :class:`MeasurementEncoder`); an attack harness passes a dishonest one, and the
        proofs are then made honestly over that dishonest measurement.
        """
        encoder = HONEST_ENCODER if encoder is None else encoder
        p = self.params
        F = p.field
        S = self.xof.SEED_SIZE
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        if len(rand) != self.rand_size:
            raise ValueError(f"rand must be {self.rand_size} bytes")
        seeds = [rand[i : i + S] for i in range(0, len(rand), S)]
        helpers = [seeds[4 * j : 4 * j + 4] for j in range(p.num_shares - 1)]
        rest = seeds[4 * (p.num_shares - 1) :]
        wr_blinds = [rest[0]] + [h[2] for h in helpers]
        vf_blinds = [rest[1]] + [h[3] for h in helpers]
        k_prove = rest[2]
        meas_seeds = [h[0] for h in helpers]

        gradient = F.check(gradient)
        if len(gradient) != p.dimension:
            raise ValueError(f"gradient has {len(gradient)} elements, expected {p.dimension}")
        head = np.concatenate([gradient, encoder.norm_bits(p, gradient)]).astype(F.dtype)
        _, wr_parts = self._shares_and_parts(head, meas_seeds, wr_blinds, nonce, USAGE_WR_JOINT_RAND_PART)
        wr_results = wraparound_dot_products(p, gradient, self.wr_xof(self.joint_rand_seed(wr_parts, USAGE_WR_JOINT_RAND_SEED)))
        meas = np.concatenate([head, encoder.wraparound_bits(p, wr_results)]).astype(F.dtype)
        leader_meas, vf_parts = self._shares_and_parts(meas, meas_seeds, vf_blinds, nonce, USAGE_JOINT_RAND_PART)
        joint_rands = self.vf_joint_rands(self.joint_rand_seed(vf_parts, USAGE_JOINT_RAND_SEED))
        flp_meas = np.concatenate([meas, wr_results]).astype(F.dtype)

        prove_rands = self.prove_rands(k_prove)
        pne, pm = p.num_proofs_norm_equality, p.num_proofs
        split = self.flp_ne.prove_rand_len * pne
        proofs = [
            self.flp_ne.prove_many(flp_meas, prove_rands[:split].reshape(pne, -1), F.zeros(0).reshape(pne, 0)).reshape(-1),
            self.flp.prove_many(flp_meas, prove_rands[split:].reshape(pm, -1), joint_rands.reshape(pm, -1)).reshape(-1),
        ]
        leader_proofs = np.concatenate(proofs).astype(F.dtype)
        for j, h in enumerate(helpers, start=1):
            leader_proofs = F.sub(leader_proofs, self.helper_proofs_share(j, h[1]))

        shares = [InputShare(0, leader_meas, leader_proofs, wr_blinds[0], vf_blinds[0])]
        shares += [InputShare(j, h[0], h[1], h[2], h[3]) for j, h in enumerate(helpers, start=1)]
        return PublicShare(tuple(wr_parts), tuple(vf_parts)), shares

    def shard_random(self, measurement, nonce: bytes | None = None, max_tries: int = 64):
        """:meth:`shard` with randomness from ``os.urandom``, retrying on :class:`WraparoundRetry`.

        Returns ``(nonce, public_share, input_shares)``.
        """
        nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
        for _ in range(max_tries):
            try:
                public, shares = self.shard(measurement, nonce, os.urandom(self.rand_size))
                return nonce, public, shares
            except WraparoundRetry:
                continue
        raise WraparoundRetry(f"no passing wraparound randomness in {max_tries} tries")

    # ------------------------------------------------------------------ aggregators
    def expand_input_share(self, share: InputShare) -> tuple[np.ndarray, np.ndarray]:
        if share.agg_id == 0:  # the leader's share holds the field vectors themselves
            assert isinstance(share.meas_share, np.ndarray) and isinstance(share.proofs_share, np.ndarray)
            return share.meas_share, share.proofs_share
        assert not isinstance(share.meas_share, np.ndarray) and not isinstance(share.proofs_share, np.ndarray)  # a helper's: seeds
        meas = self.helper_meas_share(share.agg_id, share.meas_share, self.params.meas_len)
        return meas, self.helper_proofs_share(share.agg_id, share.proofs_share)

    def prep_init(
        self, verify_key: bytes, agg_id: int, nonce: bytes, public_share: PublicShare, input_share: InputShare
    ) -> tuple[PrepState, PrepShare]:
        p = self.params
        F = p.field
        if len(verify_key) != self.verify_key_size:
            raise ValueError(f"verify_key must be {self.verify_key_size} bytes")
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        if input_share.agg_id != agg_id:
            raise ValueError("input share is for another aggregator")
        meas, proofs = self.expand_input_share(input_share)
        wr_part = self.joint_rand_part(agg_id, input_share.wr_blind, meas[: p.gradient_and_norm_len], nonce, USAGE_WR_JOINT_RAND_PART)
        wr_parts = list(public_share.wr_parts)
        wr_parts[agg_id] = wr_part
        wr_seed = self.joint_rand_seed(wr_parts, USAGE_WR_JOINT_RAND_SEED)
        wr_results = wraparound_dot_products(p, meas[: p.dimension], self.wr_xof(wr_seed))
        vf_part = self.joint_rand_part(agg_id, input_share.vf_blind, meas, nonce, USAGE_JOINT_RAND_PART)
        vf_parts = list(public_share.vf_parts)
        vf_parts[agg_id] = vf_part
        vf_seed = self.joint_rand_seed(vf_parts, USAGE_JOINT_RAND_SEED)
        joint_rands = self.vf_joint_rands(vf_seed)

        flp_meas = np.concatenate([meas, wr_results]).astype(F.dtype)
        query_rands = self.query_rands(verify_key, nonce)
        pne, pm = p.num_proofs_norm_equality, p.num_proofs
        p_split = self.flp_ne.proof_len * pne
        q_split = self.flp_ne.query_rand_len * pne
        verifiers = [
            self.flp_ne.query_many(
                flp_meas,
                proofs[:p_split].reshape(pne, -1),
                query_rands[:q_split].reshape(pne, -1),
                F.zeros(0).reshape(pne, 0),
                p.num_shares,
            ).reshape(-1),
            self.flp.query_many(
                flp_meas,
                proofs[p_split:].reshape(pm, -1),
                query_rands[q_split:].reshape(pm, -1),
                joint_rands.reshape(pm, -1),
                p.num_shares,
            ).reshape(-1),
        ]
        verifiers_share = np.concatenate(verifiers).astype(F.dtype)
        return PrepState(meas[: p.dimension], wr_seed, vf_seed), PrepShare(verifiers_share, wr_part, vf_part)

    def prep_shares_to_prep(self, prep_shares: list[PrepShare]) -> PrepMessage:
        """Combine the verifier shares and decide every proof.

        Raises:
            VerificationError: a proof does not verify (the report is rejected).
        """
        p = self.params
        F = p.field
        if len(prep_shares) != p.num_shares:
            raise ValueError(f"need {p.num_shares} prep shares, got {len(prep_shares)}")
        verifier = F.zeros(self.verifiers_len)
        for share in prep_shares:
            verifier = F.add(verifier, F.check(share.verifiers_share))
        off = 0
        for _ in range(p.num_proofs_norm_equality):
            n = self.flp_ne.verifier_len
            if not self.flp_ne.decide(verifier[off : off + n]):
                raise VerificationError("norm-equality proof rejected")
            off += n
        for _ in range(p.num_proofs):
            n = self.flp.verifier_len
            if not self.flp.decide(verifier[off : off + n]):
                raise VerificationError("validity proof rejected (bits, norm range, wraparound or count)")
            off += n
        return PrepMessage(
            self.joint_rand_seed([s.wr_part for s in prep_shares], USAGE_WR_JOINT_RAND_SEED),
            self.joint_rand_seed([s.vf_part for s in prep_shares], USAGE_JOINT_RAND_SEED),
        )

    def prep_next(self, state: PrepState, message: PrepMessage) -> np.ndarray:
        """The output share, once the joint-randomness seeds the client claimed are confirmed.

        Raises:
            VerificationError: the client's public share disagrees with the aggregators' parts.
        """
        ok_wr = hmac.compare_digest(state.wr_seed, message.wr_seed)
        ok_vf = hmac.compare_digest(state.vf_seed, message.vf_seed)
        if not (ok_wr and ok_vf):
            raise VerificationError("joint randomness check failed")
        return state.out_share

    def aggregate(self, out_shares) -> np.ndarray:
        F = self.params.field
        acc = F.zeros(self.params.dimension)
        for share in out_shares:
            acc = F.add(acc, F.check(share))
        return acc

    def unshard(self, agg_shares) -> np.ndarray:
        return decode_gradient(self.params, self.aggregate(agg_shares))
