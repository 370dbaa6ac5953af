"""Break 3 of the outside review: the CKKS secret key from released decryptions (real TenSEAL).

Li and Micciancio ("On the Security of Homomorphic Encryption on Approximate Numbers",
EUROCRYPT 2021): a key holder that returns ``Decode(c0 + c1 s)`` hands out ``c0 + c1 s``
itself. The server re-encodes the released float64 values, which gives
``Q = p + p(X^-1)`` with ``p = c0 + c1 s mod q`` (only the real part of each slot is
released); two aggregates give two equations ``c1 s + c1* s* = Q - c0 - c0*`` over
``R_q = Z_q[X]/(X^N + 1)`` in the unknowns ``s`` and ``s* = s(X^-1)``, solved point-wise in
the NTT domain. The ternary solution is the secret key; every other upload then decrypts.

With complex packing (the default since wire version 2) the real *and* imaginary part of
every slot are released: the whole canonical embedding, so re-encoding gives
``p = c0 + c1 s`` itself and one aggregate suffices (``s = (p - c0) / c1`` in the NTT
domain). Both packings are attacked here.

Positive control: the attack recovers the key from the exact decryption
(``KeyOwner._decrypt_exact``, the private path). Against the flooded release
(``KeyOwner.decrypt``) the solution is not ternary and the victim's upload does not decrypt.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedcrypt.he import CkksParams, KeyOwner
from fedcrypt.he import _seal
from fedcrypt.he.blob import decode_blob

N = 8192


# ---------------------------------------------------------------------------- ring tools
def _bitrev(n: int) -> list[int]:
    bits = n.bit_length() - 1
    return [int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)]


class _Ring:
    """Negacyclic NTT over Z_q[X]/(X^N + 1) with Python integers (q: SEAL's NTT-friendly prime)."""

    def __init__(self, q: int, n: int = N) -> None:
        self.q, self.n = q, n
        for base in range(2, 1000):
            psi = pow(base, (q - 1) // (2 * n), q)
            if pow(psi, n, q) == q - 1:
                break
        self.psi = psi
        self.psi_pows = [pow(psi, i, q) for i in range(n)]
        self.psi_inv_pows = [pow(p, q - 2, q) for p in self.psi_pows]
        self.omega = psi * psi % q
        self.rev = _bitrev(n)
        self.n_inv = pow(n, q - 2, q)

    def _cyclic(self, a: list[int], root: int) -> list[int]:
        q, n = self.q, self.n
        a = [a[r] for r in self.rev]
        length = 2
        while length <= n:
            w_len = pow(root, n // length, q)
            half = length // 2
            ws = [1] * half
            for i in range(1, half):
                ws[i] = ws[i - 1] * w_len % q
            for start in range(0, n, length):
                for j in range(half):
                    u, v = a[start + j], a[start + j + half] * ws[j] % q
                    a[start + j] = (u + v) % q
                    a[start + j + half] = (u - v) % q
            length *= 2
        return a

    def ntt(self, a: list[int]) -> list[int]:
        return self._cyclic([x * p % self.q for x, p in zip(a, self.psi_pows)], self.omega)

    def intt(self, a: list[int]) -> list[int]:
        q = self.q
        out = self._cyclic(a, pow(self.omega, q - 2, q))
        return [x * self.n_inv % q * p % q for x, p in zip(out, self.psi_inv_pows)]

    def star(self, a: list[int]) -> list[int]:
        """``a(X^-1)`` in the ring: ``a*_0 = a_0``, ``a*_(N-i) = -a_i``."""
        q, n = self.q, self.n
        return [a[0]] + [(-a[n - i]) % q for i in range(1, n)]

    def mul(self, a: list[int], b: list[int]) -> list[int]:
        return self.intt([x * y % self.q for x, y in zip(self.ntt(a), self.ntt(b))])

    def centered(self, a: list[int]) -> np.ndarray:
        q = self.q
        return np.array([x - q if x > q // 2 else x for x in a], dtype=object)


# ---------------------------------------------------------------------------- CKKS tools
def _slot_roots(n: int = N) -> np.ndarray:
    """SEAL's slot order: slot j is the root ``zeta^(3^j mod 2N)`` (or its conjugate); index k of ``zeta^(2k+1)``."""
    return np.array([(pow(3, j, 2 * n) - 1) // 2 for j in range(n // 2)])


def _reencode_symmetric(released: np.ndarray, scale: float, n: int = N) -> list[int]:
    """The integer polynomial ``p + p(X^-1)`` whose real slots are ``released`` (times 2 scale)."""
    vals = np.zeros(n, dtype=np.complex128)
    ks = _slot_roots(n)
    vals[ks] = 2 * scale * released
    vals[n - 1 - ks] = 2 * scale * released  # the conjugate root zeta^(-r) = zeta^(2(N-1-k)+1)
    zeta_inv = np.exp(-1j * np.pi * np.arange(n) / n)
    coeffs = np.real(zeta_inv * np.fft.fft(vals)) / n
    return [int(c) for c in np.rint(coeffs)]


def _reencode_full(released: np.ndarray, scale: float, n: int = N) -> list[int]:
    """The integer polynomial ``p`` whose complex slots are ``released`` (re, im interleaved; times scale)."""
    values = np.zeros(n, dtype=np.float64)
    values[: released.shape[0]] = released
    slots = scale * (values[0::2] + 1j * values[1::2])
    vals = np.zeros(n, dtype=np.complex128)
    ks = _slot_roots(n)
    vals[ks] = slots
    vals[n - 1 - ks] = np.conj(slots)
    zeta_inv = np.exp(-1j * np.pi * np.arange(n) / n)
    coeffs = np.real(zeta_inv * np.fft.fft(vals)) / n
    return [int(c) for c in np.rint(coeffs)]


def _decode(poly: np.ndarray, scale: float, packing: str, n: int = N) -> np.ndarray:
    """The values of an integer polynomial (the CKKS decoding, SEAL's slot order)."""
    p = np.array([float(x) for x in poly])
    zeta = np.exp(1j * np.pi * np.arange(n) / n)
    evals = np.fft.ifft(p * zeta) * n  # p(zeta^(2k+1)) for k = 0..N-1
    slots = evals[_slot_roots(n)] / scale
    return slots.view(np.float64) if packing == "complex" else np.real(slots)


def _ciphertext_coeffs(owner: KeyOwner, blob: bytes, kind: int) -> tuple[list[int], list[int]]:
    """``(c0, c1)`` in coefficient form mod q0 of a one-ciphertext blob at the last level."""
    params = owner.params
    runtime = _seal.runtime(params)
    _, pieces = decode_blob(blob, params, owner.fingerprint, kinds=(kind,))
    ct = _seal.load_from_bytes(runtime.seal.Ciphertext(runtime.context), runtime.context, pieces[0], "test")
    assert ct.coeff_modulus_size() == 1
    runtime.evaluator.transform_from_ntt_inplace(ct)
    data = ct.dyn_array()
    return [int(data.at(i)) for i in range(N)], [int(data.at(N + i)) for i in range(N)]


def _recover_key(ring: _Ring, owner: KeyOwner, aggregates: list[bytes], releases: list[np.ndarray]) -> list[int]:
    """Solve ``c1_k s + c1_k* s* = Q_k - c0_k - c0_k*`` (k = 1, 2) point-wise in the NTT domain;
    with complex packing, ``c1 s = p - c0`` from the first aggregate alone."""
    scale = owner.params.encoding_scale
    q = ring.q
    if owner.params.packing == "complex":
        c0, c1 = _ciphertext_coeffs(owner, aggregates[0], kind=2)
        full = _reencode_full(releases[0], scale)
        t = ring.ntt([(y - a) % q for y, a in zip(full, c0)])
        return ring.intt([ti * pow(ci, q - 2, q) % q for ti, ci in zip(t, ring.ntt(c1))])
    rows = []
    for blob, released in zip(aggregates, releases):
        c0, c1 = _ciphertext_coeffs(owner, blob, kind=2)
        sym = _reencode_symmetric(released, scale)
        t = [(y - a - b) % ring.q for y, a, b in zip(sym, c0, ring.star(c0))]
        rows.append((ring.ntt(c1), ring.ntt(ring.star(c1)), ring.ntt(t)))
    (a1, b1, t1), (a2, b2, t2) = rows
    s_hat = []
    for i in range(N):
        det = (a1[i] * b2[i] - b1[i] * a2[i]) % q
        s_hat.append((t1[i] * b2[i] - b1[i] * t2[i]) * pow(det, q - 2, q) % q)
    return ring.intt(s_hat)


def _decrypt_with(ring: _Ring, owner: KeyOwner, upload: bytes, secret: list[int]) -> np.ndarray:
    c0, c1 = _ciphertext_coeffs(owner, upload, kind=1)
    plain = [(a + b) % ring.q for a, b in zip(c0, ring.mul(c1, secret))]
    return _decode(ring.centered(plain), owner.params.encoding_scale, owner.params.packing)


@pytest.fixture(scope="module", params=["complex", "real"])
def scenario(request):
    """Four nodes; the server builds two aggregates of nodes {0, 1} and {0, 2}; node 3 is the victim."""
    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=20, packing=request.param))
    rng = np.random.default_rng(3)  # test data, not secret
    updates = [rng.uniform(-0.01, 0.01, owner.params.values_per_ciphertext) for _ in range(4)]  # every slot released
    uploads = [owner.encrypt(u) for u in updates]
    server = owner.aggregator_context()
    aggregates = [server.weighted_sum([(uploads[0], 1), (uploads[1], 1)]),
                  server.weighted_sum([(uploads[0], 1), (uploads[2], 1)])]
    ring = _Ring(_seal.runtime(owner.params).primes[0])
    return owner, ring, updates, uploads, aggregates


def test_key_recovery_from_an_exact_decryption_succeeds(scenario) -> None:
    """Positive control: the unflooded path leaks the key (what KeyOwner.decrypt did before)."""
    owner, ring, updates, uploads, aggregates = scenario
    releases = [owner._decrypt_exact(a) for a in aggregates]
    secret = ring.centered(_recover_key(ring, owner, aggregates, releases))
    assert set(secret.tolist()) <= {-1, 0, 1}, "the solution is the ternary secret key"
    stolen = _decrypt_with(ring, owner, uploads[3], [int(x) % ring.q for x in secret])[: updates[3].shape[0]]
    error = float(np.max(np.abs(stolen - updates[3])))
    print(f"exact release: key recovered, victim upload decrypted within {error:.3g}")
    assert error < 1e-6


def test_key_recovery_from_flooded_releases_fails(scenario) -> None:
    owner, ring, updates, uploads, aggregates = scenario
    releases = [owner.decrypt(a) for a in aggregates]
    secret = ring.centered(_recover_key(ring, owner, aggregates, releases))
    nonternary = sum(1 for x in secret.tolist() if x not in (-1, 0, 1))
    stolen = _decrypt_with(ring, owner, uploads[3], [int(x) % ring.q for x in secret])[: updates[3].shape[0]]
    error = float(np.max(np.abs(stolen - updates[3])))
    print(f"flooded release: {nonternary} of {N} coefficients not ternary; victim error {error:.3g}")
    assert nonternary > N // 2
    assert error > 1.0
