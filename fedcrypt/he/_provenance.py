"""Weights and provenance: what a decryptor checks before the secret key touches an aggregate.

Why: CKKS decryption computes ``c0 + c1 s``. Flooding (``KeyOwner.decrypt``) hides the
noise of *honest* ciphertexts, not a product the sender chose: the forged ciphertext
``(0, K)`` with a constant ``K = 2^57`` decrypts to ``K s`` and one release gives the whole
key (attacker review 3). Nobody without the key can write an upload whose second polynomial
is anything but the expansion of a seed, because every upload is a *seeded* symmetric
encryption (``Encryptor.encrypt_symmetric``: ``(-a s + m + e, seed)`` with ``a = PRG(seed)``),
so the rule here is: the secret key multiplies only polynomials that a PRG produced.

* An upload must be in seeded form (checked in Python, :func:`fedcrypt.he._seal.check_seal_bytes`
  with ``seeded=True``), so its ``c1`` is SEAL's expansion of its seed.
* An aggregate carries its provenance: for each summand, the weight it was added with and
  its seeds (:class:`fedcrypt.he.blob.BlobHeader`). :func:`check_aggregate` recomputes
  ``sum_i w_i a_i`` through the same SEAL operations the aggregator used (load the seeded
  ciphertext ``(0, a_i)``, :func:`weigh`, add) and refuses the aggregate unless its ``c1`` is
  that polynomial word for word, the weights are valid and add up to the header's total,
  the contribution count matches and no seed appears twice.

What that leaves the sender (the security argument, SECURITY.md states it in full): one
release is ``c0 + (sum_i w_i a_i) s + flooding`` with ``c0`` free and each ``a_i`` the
expansion of a seed it chose. Modelling the expansion as a random oracle, the sum is uniform
and fixed only once the seeds are, so one release is an RLWE sample in ``s`` with the
flooding as error (decision-RLWE with uniform ``a``, Lyubashevsky, Peikert and Regev 2010):
no chosen multiplier such as a constant ``K`` is reachable. Over many releases (a reused sum
under another ``c0``, small known combinations from rounded non-integer weights) what
protects ``s`` is the flooding's margin and its Renyi bound, as for honest ciphertexts.
Repeating a seed is refused because ``(c0_h, a) + (c0_h, a)`` doubles one upload under two
"contributions"; weights below :data:`MIN_WEIGHT` are refused and SEAL's refusals become
typed errors.

What it does not give: integrity of *which* uploads were summed. A sender can still include
one honest upload beside summands it made up (their ``a_i s`` terms then mask that upload,
as a fresh encryption would) or beside replays of earlier uploads; the round protocol with a
roster (:mod:`fedcrypt.he.round`) makes a decryptor sum signed, confirmed uploads itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedcrypt.errors import MalformedMessageError
from fedcrypt.he import _seal
from fedcrypt.he.blob import BlobHeader
from fedcrypt.he.params import CkksParams

__all__ = ["check_weight", "weigh", "check_aggregate", "MIN_WEIGHT"]

#: The smallest weight: a non-integer weight is encoded at the scale of a 40-bit or larger
#: prime, so ``2^-20`` keeps at least 20 bits of it (smaller ones round towards a zero
#: plaintext, which SEAL refuses to multiply by).
MIN_WEIGHT = 2.0**-20


def check_weight(weight: object, params: CkksParams) -> bool:
    """Validate a weight; True if it is integral (the no-rescale path).

    Raises:
        TypeError / ValueError: not a positive finite number up to ``max_weight``, or not an
            integer while ``upload_level < 1``.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)):
        raise TypeError(f"weight must be an int or a float, got {type(weight).__name__}")
    value = float(weight)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"weight must be a positive finite number, got {weight!r}")
    if value > params.max_weight:
        raise ValueError(f"weight {weight!r} exceeds max_weight={params.max_weight:g} of the parameters")
    if value < MIN_WEIGHT:
        raise ValueError(f"weight {weight!r} is below {MIN_WEIGHT!r} (it would encode to nothing)")
    integral = isinstance(weight, (int, np.integer)) or value.is_integer()
    if not integral and params.upload_level < 1:
        raise ValueError(
            f"non-integer weight {weight!r} needs parameters with upload_level >= 1 (preset 'weighted'); use integer weights such as example counts"
        )
    return integral


def weigh(ct: Any, weight: float, integral: bool, runtime: _seal.SealRuntime) -> Any:
    """``weight * ct`` as a ciphertext at the last level.

    An integral weight of 1 returns ``ct`` itself (mod-switched in place): callers pass a
    ciphertext they own. Every operation acts on the two polynomials separately, so the
    second polynomial of the result depends only on ``ct``'s second polynomial and the
    weight (what :func:`check_aggregate` relies on).
    """
    seal, evaluator = runtime.seal, runtime.evaluator
    plain = seal.Plaintext()
    out = seal.Ciphertext(runtime.context)
    if integral:
        if int(weight) == 1:
            out = ct
        else:
            runtime.encoder.encode(int(weight), ct.parms_id(), 1.0, plain)
            evaluator.multiply_plain(ct, plain, out)
    else:
        level_prime = float(runtime.primes[ct.coeff_modulus_size() - 1])
        runtime.encoder.encode(float(weight), ct.parms_id(), level_prime, plain)
        evaluator.multiply_plain(ct, plain, out)
        evaluator.rescale_to_next_inplace(out)
    if list(out.parms_id()) != list(runtime.last_parms_id):
        evaluator.mod_switch_to_inplace(out, runtime.last_parms_id)
    return out


def check_aggregate(header: BlobHeader, pieces: list[memoryview], params: CkksParams, runtime: _seal.SealRuntime) -> None:
    """Refuse an aggregate whose second polynomials are not ``sum_i w_i PRG(seed_i)``.

    ``pieces`` are the aggregate's ciphertext bytes, already checked by
    :func:`fedcrypt.he._seal.check_seal_bytes` (unseeded, at the last level).

    Raises:
        MalformedMessageError: the provenance does not match the header (count, total
            weight, an invalid or repeated seed or weight), or a ciphertext's second
            polynomial differs from the one its provenance gives.
    """
    what = "aggregate"
    provenance = header.provenance
    if len(provenance) != header.contributions:
        raise MalformedMessageError(f"{what}: {len(provenance)} provenance entries for {header.contributions} contributions")
    total = 0.0
    flags: list[bool] = []
    seen: set[bytes] = set()
    for weight, seeds in provenance:
        try:
            flags.append(check_weight(weight, params))
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"{what}: a provenance weight is invalid ({exc})") from None
        total += float(weight)
        for seed in seeds:
            if seed in seen:
                raise MalformedMessageError(f"{what}: a seed appears twice in the provenance (one upload counted twice)")
            seen.add(seed)
    if total != header.total_weight:
        raise MalformedMessageError(f"{what}: the provenance's weights add up to {total!r}, the header says {header.total_weight!r}")
    context, evaluator = runtime.context, runtime.evaluator
    scale = params.encoding_scale
    for index, piece in enumerate(pieces):
        expected = None
        for (weight, seeds), integral in zip(provenance, flags):
            try:
                ct = _seal.load_seeded_zero(context, runtime.upload_parms_id, scale, seeds[index])
            except MalformedMessageError:
                raise MalformedMessageError(f"{what}: a provenance seed does not load") from None
            try:
                term = weigh(ct, weight, integral, runtime)
            except (RuntimeError, ValueError):  # SEAL's own refusal: a typed error, never a crash
                raise MalformedMessageError(f"{what}: SEAL refused a provenance weight") from None
            if expected is None:
                expected = term
            else:
                evaluator.add_inplace(expected, term)
        assert expected is not None
        mine = _seal.polynomial_words(_seal.save_bytes(expected), 1)
        if bytes(mine) != bytes(_seal.polynomial_words(piece, 1)):
            raise MalformedMessageError(
                f"{what}: ciphertext {index}'s second polynomial is not the weighted sum of its summands' seeded polynomials (a forged aggregate)"
            )
