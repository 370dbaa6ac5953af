"""Verified aggregation: L2-norm-bound proofs on secret-shared vectors (PINE).

Layers, each usable alone:

* :mod:`.field` -- the drafts' prime fields as numpy vectors, byte codecs, NTT;
* :mod:`.xof` -- XofHmacSha256Aes128 (TurboSHAKE128 is not available: see its docstring);
* :mod:`.flp` -- the fully linear proof of draft-irtf-cfrg-vdaf-11 (prove, query, decide);
* :mod:`.pine` -- PINE's parameters, fixed-point encoding, norm-bound and wraparound circuits;
* :mod:`.vdaf` -- client sharding, aggregator preparation, aggregation and unsharding,
  byte-exact against draft-chen-cfrg-vdaf-pine's Pine40HmacSha256Aes128 test vectors.
"""

from .pine import PineParams, WraparoundRetry
from .vdaf import VARIANTS, PineVdaf, VerificationError

__all__ = ["PineParams", "PineVdaf", "VARIANTS", "VerificationError", "WraparoundRetry"]
