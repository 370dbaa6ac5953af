"""Threshold (multi-party) CKKS through OpenFHE (extra ``threshold``, CPython 3.10).

In single-key CKKS (:mod:`fedcrypt.he`) every client holds the secret key, so one client
colluding with the server decrypts anyone's upload. Here no party ever holds the key:

1. **key generation** (a chain, OpenFHE's ``MultipartyKeyGen``): key holder 0 runs
   ``KeyGen``; key holder ``i`` runs ``MultipartyKeyGen`` on holder ``i-1``'s public key
   and forwards the result; holder ``n-1``'s public key is the joint key
   ``(b, a) = (-a * (s_0 + ... + s_{n-1}) + e, a)`` and the server broadcasts it;
   optionally (``recovery_threshold = t``) each holder then Shamir-shares its ``s_i``
   among the others, so that up to ``n - t`` dropped holders can be stood in for;
2. **upload**: client ``i`` multiplies its clipped vector by its own (float) weight
   ``w_i`` in plaintext (it knows its number of examples) and encrypts ``w_i x_i`` under
   the joint key; the upload's header carries ``w_i`` for bookkeeping;
3. **aggregation**: the server computes ``sum_i ct_i`` (``EvalAdd`` only: no scale
   change, no level used) and sums the claimed ``w_i``. The aggregate's noise is that of
   ``num_clients`` fresh ciphertexts whatever the weights, and so is the decryption
   flooding sized from it (a server-side ``w_i * ct_i`` would multiply both by ``w_i``);
4. **partial decryption**: holder 0 runs ``MultipartyDecryptLead``
   (``c0 + c1 s_0 + flood_0``), every other holder ``MultipartyDecryptMain``
   (``c1 s_i + flood_i``), each on the aggregate only and once;
5. **fusion** (``MultipartyDecryptFusion``): the sum of all ``n`` shares is
   ``c0 + c1 s + e'`` and decodes to the weighted sum.

The package is sans-IO like :mod:`fedcrypt.secagg`, and shaped like it: ``params``
(:class:`ThresholdParams`, presets), ``messages`` (stages and wire messages), ``client``
(:class:`KeyHolder`), ``server`` (:class:`ThresholdServer`, :class:`ThresholdSum`,
:class:`ThresholdDecryption`), ``simulate``. :class:`KeyHolder` and :class:`ThresholdServer`
take and return bytes or frozen messages; a transport moves them. The round protocol
around them (key chain order, committee, backup routing, stand-ins, abort conditions, and
with a roster signed key chains and uploads) is :mod:`fedcrypt.he.threshold.round`
(:class:`ThresholdConfig`, :class:`ThresholdClient`, :class:`ThresholdRoundServer`), shaped
like the single-key round :mod:`fedcrypt.he.round`.

Invariants:

* importing this package never imports ``openfhe``; the first use without it raises
  :class:`~fedcrypt.errors.MissingExtraError` naming ``threshold`` and the supported
  Python versions;
* every message has a canonical, versioned byte encoding; its decoder checks magic,
  version, lengths and caps derived from the parameters before OpenFHE parses anything;
* every handler validates all of its input before it changes state: a rejected message
  leaves the object as it was;
* a key holder answers at most one partial decryption per aggregate and never decrypts an
  upload, and fusion needs a share for *each* of the ``n`` key shares: a missing one aborts
  with :class:`~fedcrypt.errors.RoundAbortedError`, unless ``recovery_threshold = t`` is
  set and at most ``n - t`` holders dropped, whose shares stand-ins rebuild (t-of-n, see
  :class:`ThresholdServer`); a holder releases backup shares for at most ``n - t`` others;
* a key share never leaves its :class:`KeyHolder` except as Shamir pieces of the t-of-n
  backup, each AES-GCM-encrypted to one other holder, and in the holder's own state bytes
  (:meth:`KeyHolder.to_state_bytes`, for the node's private storage between messages);
  no secret appears in a repr.
"""

from __future__ import annotations

from ._runtime import SUPPORTED_PYTHONS, load_openfhe
from .client import KeyHolder
from .messages import BlobKind, DecryptionShare, KeyBackupMessage, KeyShareMessage, RosterMessage, Stage
from .params import PACKINGS, PRESETS, ThresholdParams
from .round import ThresholdClient, ThresholdConfig, ThresholdRoundServer
from .server import ThresholdDecryption, ThresholdServer, ThresholdSum, fuse_partials
from .simulate import SimulationResult, simulate

__all__ = [
    "ThresholdParams",
    "KeyShareMessage",
    "DecryptionShare",
    "RosterMessage",
    "KeyBackupMessage",
    "KeyHolder",
    "ThresholdServer",
    "ThresholdDecryption",
    "ThresholdSum",
    "SimulationResult",
    "simulate",
    "fuse_partials",
    "Stage",
    "BlobKind",
    "SUPPORTED_PYTHONS",
    "PRESETS",
    "PACKINGS",
    "load_openfhe",
    "ThresholdConfig",
    "ThresholdClient",
    "ThresholdRoundServer",
]
