"""The fully linear proof (FLP) of draft-irtf-cfrg-vdaf-11, Section 7.3 ({{BBCGGI19}}, Section 4.2).

A validity circuit ``C(meas, joint_rand)`` is affine except for calls to gadgets (small
polynomial sub-circuits). For gadget ``G_i`` of arity ``L_i`` and degree ``D_i`` called
``M_i`` times, let ``P_i = next_power_of_2(M_i + 1)`` and ``alpha_i`` a primitive ``P_i``-th
root of unity. The prover

1. interpolates, for each wire ``j``, the polynomial ``W_ij`` of degree < ``P_i`` with
   ``W_ij(alpha_i^0) = seed_ij`` (prover randomness, which blinds the proof) and
   ``W_ij(alpha_i^k) = `` the ``j``-th input of the ``k``-th call (``k = 1..M_i``), zero above;
2. sends ``proof = seed_1 || coeffs(G_1(W_1)) || ... || seed_H || coeffs(G_H(W_H))``, where
   ``G_i(W_i)`` has degree ``D_i (P_i - 1)``.

Each verifier holds an additive share of ``meas`` and ``proof``. It re-runs the circuit,
taking the ``k``-th output of ``G_i`` to be ``G_i(W_i)(alpha_i^k)`` read off its proof share
(all of this is linear, so it computes a share of the circuit output ``v``), and at a random
point ``t_i`` (query randomness; ``t_i^P_i != 1`` so no gadget output is revealed) a share of
each ``W_ij(t_i)`` and of ``G_i(W_i)(t_i)``. The verifier message is
``[v] || x_1 || [y_1] || ... || x_H || [y_H]``; once the shares are summed, ``decide``
accepts iff ``G_i(x_i) == y_i`` for every gadget (the gadget polynomial is consistent with its
wires, except with probability ``D_i (P_i - 1) / q`` over ``t_i``) and ``v == 0``. Circuits with
several outputs are reduced by a random linear combination ``sum_k r^(k+1) out[k]`` with
``r`` the first query-randomness element.

Soundness error per proof, roughly ``(sum_i D_i P_i + circuit degree in joint_rand) / q``: a
small field needs several proofs (PINE's ``num_proofs``). Zero knowledge needs the prover
randomness to be uniform and secret (it comes from the client's CSPRNG seed).

Interface restriction (documented, sufficient for PINE and the Prio3 circuits): a circuit's
gadget inputs are affine in ``(meas, joint_rand)``; they never depend on another gadget's
output. :class:`Circuit` therefore splits evaluation into :meth:`Circuit.gadget_inputs` and
:meth:`Circuit.combine`.

Polynomials are interpolated and multiplied with the NTT over the field's 2-power subgroup;
the query evaluates wire polynomials at ``t`` by barycentric Lagrange weights, without an
inverse transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fedcrypt.errors import CryptoError

from .field import PrimeField, next_power_of_2

__all__ = [
    "Gadget",
    "Mul",
    "PolyEval",
    "ParallelSum",
    "Circuit",
    "Flp",
    "QueryRandomnessError",
]


class QueryRandomnessError(CryptoError):
    """The query randomness hit the gadget evaluation domain (probability ``P / q``).

    Raised rather than answered: answering would reveal a gadget output. The report is
    rejected; an honest client is unlucky with negligible probability for large fields.
    """


# ---------------------------------------------------------------------------- gadgets
class Gadget:
    """A polynomial sub-circuit. ``eval`` maps ``wires[arity, n]`` to ``n`` outputs point-wise."""

    if TYPE_CHECKING:  # read-only: a subclass gives them as frozen fields or as properties

        @property
        def arity(self) -> int: ...

        @property
        def degree(self) -> int: ...

    def eval(self, field: PrimeField, wires: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Mul(Gadget):
    """``Mul(x, y) = x * y``."""

    arity: int = 2
    degree: int = 2

    def eval(self, field: PrimeField, wires: np.ndarray) -> np.ndarray:
        return field.mul(wires[0], wires[1])


@dataclass(frozen=True, slots=True)
class PolyEval(Gadget):
    """``PolyEval(x) = sum_k coeffs[k] x^k`` (lowest degree first, ``coeffs[-1] != 0``)."""

    coeffs: tuple[int, ...]

    @property
    def arity(self) -> int:
        return 1

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    def eval(self, field: PrimeField, wires: np.ndarray) -> np.ndarray:
        x = wires[0]
        acc = field.zeros(len(x))
        for c in reversed(self.coeffs):  # Horner
            acc = field.add(field.mul(acc, x), c)
        return acc


@dataclass(frozen=True, slots=True)
class ParallelSum(Gadget):
    """``sum_{c < count} inner(x[c*a : (c+1)*a])`` with ``a = inner.arity`` (VDAF-11 7.3.1.3)."""

    inner: Gadget
    count: int

    @property
    def arity(self) -> int:
        return self.inner.arity * self.count

    @property
    def degree(self) -> int:
        return self.inner.degree

    def eval(self, field: PrimeField, wires: np.ndarray) -> np.ndarray:
        a = self.inner.arity
        n = wires.shape[1]
        # one inner call over all chunks at once: wires[c*a + j] -> stacked along the points
        stacked = wires.reshape(self.count, a, n).transpose(1, 0, 2).reshape(a, self.count * n)
        out = self.inner.eval(field, stacked).reshape(self.count, n)
        return np.asarray(field.sum(out, axis=0), dtype=field.dtype)


# ---------------------------------------------------------------------------- circuits
class Circuit:
    """A validity circuit (VDAF-11 Section 7.3.2) with gadget inputs affine in the input.

    Subclasses set ``field``, ``gadgets``, ``gadget_calls``, ``meas_len``, ``joint_rand_len``,
    ``eval_output_len`` and implement :meth:`gadget_inputs` and :meth:`combine`.
    """

    field: PrimeField
    gadgets: tuple[Gadget, ...]
    gadget_calls: tuple[int, ...]
    meas_len: int
    joint_rand_len: int
    eval_output_len: int = 1

    def gadget_inputs(self, meas: np.ndarray, joint_rand: np.ndarray, num_shares: int) -> list[np.ndarray]:
        """For gadget ``i``: the array ``[arity_i, calls_i]``, column ``k`` the ``k``-th call's inputs."""
        raise NotImplementedError  # pragma: no cover

    def combine(
        self,
        meas: np.ndarray,
        joint_rand: np.ndarray,
        num_shares: int,
        gadget_outputs: list[np.ndarray],
    ) -> np.ndarray:
        """The circuit outputs (``eval_output_len`` of them) from the gadget outputs."""
        raise NotImplementedError  # pragma: no cover

    def gadget_inputs_many(self, meas: np.ndarray, joint_rands: np.ndarray, num_shares: int) -> list[np.ndarray]:
        """:meth:`gadget_inputs` for each row of ``joint_rands`` (``[k, joint_rand_len]``):
        for gadget ``i`` the array ``[k, arity_i, calls_i]``. A subclass may vectorise it."""
        per = [self.gadget_inputs(meas, jr, num_shares) for jr in joint_rands]
        return [np.stack([wires[i] for wires in per]).astype(self.field.dtype) for i in range(len(self.gadgets))]

    def combine_many(self, meas: np.ndarray, joint_rands: np.ndarray, num_shares: int, gadget_outputs: list[np.ndarray]) -> np.ndarray:
        """:meth:`combine` for each row of ``joint_rands``; gadget outputs ``[k, calls_i]``;
        returns ``[k, eval_output_len]``."""
        rows = [self.combine(meas, jr, num_shares, [out[j] for out in gadget_outputs]) for j, jr in enumerate(joint_rands)]
        return np.stack(rows).astype(self.field.dtype)

    def eval(self, meas: np.ndarray, joint_rand: np.ndarray, num_shares: int = 1) -> np.ndarray:
        """Evaluate the circuit in the clear (the prover's view; zero vector iff valid)."""
        self._check(meas, joint_rand)
        inputs = self.gadget_inputs(meas, joint_rand, num_shares)
        outs = [g.eval(self.field, w) for g, w in zip(self.gadgets, inputs)]
        return self.combine(meas, joint_rand, num_shares, outs)

    def _check(self, meas: np.ndarray, joint_rand: np.ndarray) -> None:
        if len(meas) != self.meas_len:
            raise ValueError(f"measurement length {len(meas)} != {self.meas_len}")
        if len(joint_rand) != self.joint_rand_len:
            raise ValueError(f"joint randomness length {len(joint_rand)} != {self.joint_rand_len}")


def _rows(field: PrimeField, values: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=field.dtype).reshape(-1) for v in values]).astype(field.dtype)


class Flp:
    """``prove`` / ``query`` / ``decide`` for one :class:`Circuit` (VDAF-11 Section 7.3.3).

    ``queries = s > 1`` (an extension; ``s = 1`` is VDAF-11's FLP, byte for byte): each wire
    polynomial takes ``s`` random prover values (at ``alpha^0 .. alpha^(s-1)``, the calls at
    ``alpha^s .. alpha^(s+M-1)``, ``P = next_power_of_2(M + s)``), and the verifier tests the
    gadget polynomial at ``s`` independent points ``t_1 .. t_s``. A wrong gadget polynomial
    differs from ``G(W)`` by a nonzero polynomial of degree at most ``D (P - 1)``, which
    vanishes at all ``s`` points with probability at most ``(D (P - 1) / q)^s``: soundness
    amplified like ``s`` proofs, for ``(s - 1) * arity`` more proof elements instead of a
    whole proof each. Zero knowledge: the ``s`` values of each wire at the ``t_i`` are the
    image of its ``s`` uniform prover values under an invertible map (the Lagrange basis of
    the prover points at distinct ``t_i`` outside the domain), so they are uniform. Only
    circuits without joint randomness and with one output may use it (PINE's norm-equality
    circuit): the joint-randomness error and the output reduction are not amplified.
    """

    def __init__(self, circuit: Circuit, queries: int = 1) -> None:
        if isinstance(queries, bool) or not isinstance(queries, int) or not 1 <= queries <= 16:
            raise ValueError(f"queries must be an int in [1, 16], got {queries!r}")
        if queries > 1 and (circuit.joint_rand_len > 0 or circuit.eval_output_len > 1):
            # only the gadget tests are amplified: a circuit's joint randomness (which the client
            # can grind) and the reduction of several outputs keep their one-query error
            raise ValueError("queries > 1 amplifies only circuits without joint randomness and with one output")
        self.circuit = circuit
        self.field = circuit.field
        self.queries = queries
        self._domains = [next_power_of_2(queries + m) for m in circuit.gadget_calls]
        self.prove_rand_len = sum(g.arity for g in circuit.gadgets) * queries
        self.query_rand_len = len(circuit.gadgets) * queries + (1 if circuit.eval_output_len > 1 else 0)
        self.joint_rand_len = circuit.joint_rand_len
        self.meas_len = circuit.meas_len
        self.proof_len = sum(queries * g.arity + g.degree * (p - 1) + 1 for g, p in zip(circuit.gadgets, self._domains))
        self.verifier_len = 1 + sum(queries * (g.arity + 1) for g in circuit.gadgets)

    def soundness_error(self) -> float:
        """An upper bound on the chance that one proof of a false statement is accepted
        through its gadget tests: ``sum_i (D_i (P_i - 1) / q)^queries``."""
        q = self.field.modulus
        return sum((g.degree * (p - 1) / q) ** self.queries for g, p in zip(self.circuit.gadgets, self._domains))

    # ------------------------------------------------------------------ prove
    def prove(self, meas: np.ndarray, prove_rand: np.ndarray, joint_rand: np.ndarray) -> np.ndarray:
        """One proof (see :meth:`prove_many`)."""
        F = self.field
        return self.prove_many(meas, prove_rand.reshape(1, -1), np.asarray(joint_rand, dtype=F.dtype).reshape(1, -1))[0]

    def _check_many(self, meas: np.ndarray, rands: np.ndarray, rand_len: int, joint_rands: np.ndarray, what: str) -> int:
        self.circuit._check(meas, joint_rands[0] if len(joint_rands) else np.zeros(self.joint_rand_len))
        k = rands.shape[0]
        if rands.ndim != 2 or rands.shape[1] != rand_len:
            raise ValueError(f"{what} randomness must be [k, {rand_len}], got {rands.shape}")
        if joint_rands.shape != (k, self.joint_rand_len):
            raise ValueError(f"joint randomness must be [{k}, {self.joint_rand_len}], got {joint_rands.shape}")
        return k

    def _tables(self, seeds: np.ndarray, wires: np.ndarray, p: int) -> np.ndarray:
        """``[k * arity, p]``: per proof and wire, its ``queries`` prover values (the seeds,
        query-major: ``seeds[:, s * arity + j]`` is wire ``j``'s value at ``alpha^s``), then
        the call inputs, zero above."""
        F = self.field
        k, arity, calls = wires.shape
        s = self.queries
        table = F.zeros(k * arity * p).reshape(k, arity, p)
        table[:, :, :s] = seeds.reshape(k, s, arity).transpose(0, 2, 1)
        table[:, :, s : s + calls] = wires
        return table.reshape(k * arity, p)

    def prove_many(self, meas: np.ndarray, prove_rands: np.ndarray, joint_rands: np.ndarray) -> np.ndarray:
        """``k`` proofs of one measurement, one per row of ``prove_rands`` / ``joint_rands``
        (``[k, proof_len]``); each equals :meth:`prove` of its row. The proofs share every
        NTT and gadget evaluation call (one numpy operation over all ``k``)."""
        F = self.field
        c = self.circuit
        k = self._check_many(meas, prove_rands, self.prove_rand_len, joint_rands, "prover")
        inputs = c.gadget_inputs_many(meas, joint_rands, 1)
        parts: list[np.ndarray] = []
        offset = 0
        for g, p, wires in zip(c.gadgets, self._domains, inputs):
            seeds = prove_rands[:, offset : offset + self.queries * g.arity]
            offset += self.queries * g.arity
            wire_coeffs = F.ntt(self._tables(seeds, wires, p), p, inverse=True)
            gadget_len = g.degree * (p - 1) + 1
            n = next_power_of_2(gadget_len)
            evals = F.ntt(wire_coeffs, n).reshape(k, g.arity, n).transpose(1, 0, 2).reshape(g.arity, k * n)
            values = g.eval(F, evals).reshape(k, n)
            parts += [seeds, F.ntt(values, n, inverse=True)[:, :gadget_len]]
        return np.concatenate(parts, axis=1).astype(F.dtype)

    # ------------------------------------------------------------------ query
    def query(
        self,
        meas: np.ndarray,
        proof: np.ndarray,
        query_rand: np.ndarray,
        joint_rand: np.ndarray,
        num_shares: int,
    ) -> np.ndarray:
        """One verifier message (see :meth:`query_many`)."""
        F = self.field
        if len(proof) != self.proof_len:
            raise ValueError(f"proof length {len(proof)} != {self.proof_len}")
        return self.query_many(
            meas,
            proof.reshape(1, -1),
            query_rand.reshape(1, -1),
            np.asarray(joint_rand, dtype=F.dtype).reshape(1, -1),
            num_shares,
        )[0]

    def query_many(
        self,
        meas: np.ndarray,
        proofs: np.ndarray,
        query_rands: np.ndarray,
        joint_rands: np.ndarray,
        num_shares: int,
    ) -> np.ndarray:
        """``k`` verifier messages (``[k, verifier_len]``), one per row of ``proofs``,
        ``query_rands`` and ``joint_rands``.

        Each wire polynomial is interpolated (an inverse NTT, all proofs and wires at once)
        and evaluated at its proof's ``t`` against the powers of ``t``; the result is the same
        field element as the barycentric formula of VDAF-11.

        Raises:
            QueryRandomnessError: a ``t`` is a root of unity of its gadget's domain.
        """
        F = self.field
        q = F.modulus
        c = self.circuit
        k = self._check_many(meas, query_rands, self.query_rand_len, joint_rands, "query")
        if proofs.shape != (k, self.proof_len):
            raise ValueError(f"proofs must be [{k}, {self.proof_len}], got {proofs.shape}")
        first = 1 if c.eval_output_len > 1 else 0
        inputs = c.gadget_inputs_many(meas, joint_rands, num_shares)
        outputs: list[np.ndarray] = []
        tests: list[np.ndarray] = []
        offset = 0
        s = self.queries
        for i, (g, p, wires) in enumerate(zip(c.gadgets, self._domains, inputs)):
            seeds = proofs[:, offset : offset + s * g.arity]
            offset += s * g.arity
            gadget_len = g.degree * (p - 1) + 1
            coeffs = proofs[:, offset : offset + gadget_len]
            offset += gadget_len
            # gadget outputs G(W)(alpha^j), j = 1..M: fold the coefficients mod x^p - 1
            folded = F.zeros(k * p).reshape(k, p)
            for start in range(0, gadget_len, p):
                chunk = coeffs[:, start : start + p]
                folded[:, : chunk.shape[1]] = F.add(folded[:, : chunk.shape[1]], chunk)
            outputs.append(F.ntt(folded, p)[:, s : s + wires.shape[2]])
            # the gadget tests at t_1 .. t_s
            wire_coeffs = F.ntt(self._tables(seeds, wires, p), p, inverse=True)
            for j in range(s):
                ts = [int(x) for x in query_rands[:, first + i * s + j]]
                if any(pow(t, p, q) == 1 for t in ts):
                    raise QueryRandomnessError("query randomness is a root of unity of the gadget domain")
                t_powers = F.powers_rows(ts, max(p, gadget_len))
                rows = np.repeat(t_powers[:, :p], g.arity, axis=0)
                x = np.asarray(F.sum(F.mul(wire_coeffs, rows), axis=1), dtype=F.dtype).reshape(k, g.arity)
                y = np.asarray(F.sum(F.mul(coeffs, t_powers[:, :gadget_len]), axis=1), dtype=F.dtype).reshape(k, 1)
                tests += [x, y]
        out = c.combine_many(meas, joint_rands, num_shares, outputs)
        if first:
            r_powers = F.powers_rows([int(r) for r in query_rands[:, 0]], out.shape[1] + 1)[:, 1:]
            v = np.asarray(F.sum(F.mul(out, r_powers), axis=1), dtype=F.dtype).reshape(k, 1)
        else:
            v = out[:, :1]
        return np.concatenate([v] + tests, axis=1).astype(F.dtype)

    # ------------------------------------------------------------------ decide
    def decide(self, verifier: np.ndarray) -> bool:
        F = self.field
        if len(verifier) != self.verifier_len:
            raise ValueError(f"verifier length {len(verifier)} != {self.verifier_len}")
        v = int(verifier[0])
        offset = 1
        for g in self.circuit.gadgets:
            for _ in range(self.queries):
                x = verifier[offset : offset + g.arity]
                y = int(verifier[offset + g.arity])
                offset += g.arity + 1
                z = int(g.eval(F, np.asarray(x, dtype=F.dtype).reshape(g.arity, 1))[0])
                if z != y:
                    return False
        return v == 0
