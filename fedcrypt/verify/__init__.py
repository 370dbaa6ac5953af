"""Verified aggregation: L2-norm-bound proofs on secret-shared vectors (PINE).

Rothblum, Omri, Chen, Talwar, "PINE: Efficient Norm-Bound Verification for Secret-Shared
Vectors" (arXiv 2311.10237, [ROCT23]); draft-chen-cfrg-vdaf-pine.

The round (same shape as :mod:`fedcrypt.secagg` and :mod:`fedcrypt.he.round`, sans-IO):

* :class:`VerifyConfig` -- layout (:class:`~fedcrypt.vectors.TensorSpec`), L2 bound,
  fixed-point scale, PINE variant and parameters, the helper's public key, the noise;
* :class:`VerifyClient` -- fed the leader's upload request, returns a :class:`Report`
  (its vector clipped, fixed-point encoded, proved and secret-shared; the helper's share
  sealed to the helper);
* :class:`Leader` and :class:`Helper` -- the two non-colluding aggregators: they verify
  every report on shares, sum the accepted ones, each adds half of the discrete Gaussian
  noise to its share of the sum, and the leader decodes the result;
* :func:`simulate` -- one round in process, every message through its bytes.

Threat model. *Privacy*: a client's vector stays hidden from each aggregator alone (the
leader sees a pseudorandom share, the helper its seeds), as long as the two do not
collude; the verifier messages the aggregators exchange reveal only whether the report is
valid (FLP zero knowledge, honest prover). The leader learns the noised sum of at least
``min_reports`` accepted reports, once per round: the helper releases one share per round,
only for a round after the last it released (a record the helper service persists), and
only when the leader's decision on every report equals its own. *Robustness*: a report is
summed only if both PINE proofs verify (norm equality; bits, norm range, wraparound,
success count) and the client's joint-randomness parts agree with the aggregators', so no
client can push a vector whose encoded L2 norm exceeds ``B`` into the sum except with the
proofs' soundness error: at most ``2^-soundness_bits`` (default 64) for the norm equality,
which the round tests at several points (the draft's single point is about ``2^-30`` in
Field40), far less for the main circuit (4 proofs) and the 100 wraparound checks, given a
field large enough for the wraparound check to be sound (``VerifyConfig`` refuses others).
The helper answers with its verifier share before it sees the leader's, so a helper
that lies about its share (without colluding with the client) cannot make the leader
accept an invalid report, and can only get valid ones rejected. Not defended: a helper
colluding with a client (it could make the leader accept that client's invalid report);
an aggregator that alters its own shares learns the validity of the altered report; a
leader that runs rounds with chosen (or made-up) clients to isolate one client's vector
(the usual limit of secure aggregation; DP noise bounds what that reveals); the leader
knows its own half of the noise, so against the leader only the helper's half counts
(:meth:`AggregationResult.dp_event`).

Layers, each usable alone:

* :mod:`.field` -- the drafts' prime fields as numpy vectors, byte codecs, NTT;
* :mod:`.xof` -- XofHmacSha256Aes128 (TurboSHAKE128 is not available: see its docstring);
* :mod:`.flp` -- the fully linear proof of draft-irtf-cfrg-vdaf-11 (prove, query, decide);
* :mod:`.pine` -- PINE's parameters, fixed-point encoding, norm-bound and wraparound circuits;
* :mod:`.vdaf` -- client sharding, aggregator preparation, aggregation and unsharding,
  byte-exact against draft-chen-cfrg-vdaf-pine's Pine40HmacSha256Aes128 test vectors.
"""

from .client import VerifyClient, make_report
from .config import VerifyConfig
from .helper import Helper
from .leader import AggregationResult, Leader, RoundReport
from .messages import (
    HELPER,
    AggregateRequest,
    AggregateShare,
    LeaderPrep,
    Message,
    MessageType,
    PrepareEntry,
    PrepareRequest,
    PrepareResponse,
    PrepareResult,
    Report,
    Stage,
    Status,
    UploadRequest,
    decode_message,
)
from .pine import PineParams, WraparoundRetry
from .simulate import SimulationResult, simulate
from .vdaf import VARIANTS, MeasurementEncoder, PineVdaf, VerificationError

__all__ = [
    "VerifyConfig",
    "VerifyClient",
    "Leader",
    "Helper",
    "AggregationResult",
    "RoundReport",
    "SimulationResult",
    "simulate",
    "make_report",
    "Stage",
    "Status",
    "MessageType",
    "Message",
    "decode_message",
    "UploadRequest",
    "Report",
    "PrepareEntry",
    "PrepareRequest",
    "PrepareResult",
    "PrepareResponse",
    "LeaderPrep",
    "AggregateRequest",
    "AggregateShare",
    "HELPER",
    "MeasurementEncoder",
    "PineParams",
    "PineVdaf",
    "VARIANTS",
    "VerificationError",
    "WraparoundRetry",
]
