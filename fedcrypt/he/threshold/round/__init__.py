"""The threshold CKKS aggregation round, sans-IO: key chain, backup, uploads, partial
decryptions, stand-ins.

Shaped like :mod:`fedcrypt.he.round` (and :mod:`fedcrypt.secagg`): :class:`ThresholdConfig`
(frozen, validated), a node-side :class:`ThresholdClient` fed messages or bytes and
returning messages (one transition table, its own ``to_state_bytes`` /
``from_state_bytes``), a server-side :class:`ThresholdRoundServer` that receives replies
and, at the end of each stage, says which message goes to which node, typed
:class:`AggregationResult` and :class:`RoundReport`, and :func:`simulate`. Every node is a
key holder of the session's committee and a client; a transport (Flower, say) only moves
the bytes. The cryptography is :mod:`fedcrypt.he.threshold`'s
(:class:`~fedcrypt.he.threshold.KeyHolder`, :class:`~fedcrypt.he.threshold.ThresholdServer`).

One round (``node`` is the recipient of a request and the sender of a reply)::

    KEYGEN   server -> holder i (i = 0 .. n-1, one at a time)
                                      KeygenRequest: session, party i, committee, holder i-1's reply
             holder -> server         KeygenReply: its link (digests of the key it extended and of
                                      the key it made, transport key; signed with a roster) and key
    JOINT    server -> every holder   JointRequest: every link and the joint key (the last one's)
             holder -> server         JointReply: its key backups, one sealed to each other holder
                                      (recovery_threshold; each signed with a roster)
    BACKUP   server -> every holder   BackupRequest: the backups sealed to it    (recovery_threshold)
             holder -> server         BackupReply
    ENCRYPT  server -> key holders    EncryptRequest: the joint key's fingerprint
             holder -> server         Upload: the encryption of M * (w/M [x, 1]); signed with a roster
    CONFIRM  server -> uploaders      ConfirmRequest: the set of uploads summed (roster only)
             uploader -> server       Confirmation: its signature of that set
    DECRYPT  server -> every holder   DecryptRequest: the aggregate (no roster), or every signed
                                      upload with its confirmation (roster); a set larger than
                                      ``part_bytes`` is streamed: SumPart 0 (the set's entries,
                                      the first uploads), SumPart 1, ... each answered by a
                                      SumAck, then a DecryptRequest with the last uploads
             holder -> server         PartialDecryption: its flooded share of the sum
    RELEASE  server -> t-1 helpers    ReleaseRequest: dropped holder, stand-in   (a holder dropped, t-of-n)
             helper -> server         ReleaseReply: its backup piece of the dropped share, sealed
                                      to the stand-in (signed with a roster)
    RECOVER  server -> stand-in       RecoverRequest: the released pieces, and the aggregate
                                      without a roster (with one: none; the stand-in decrypts the
                                      sum it made itself at DECRYPT)
             stand-in -> server       PartialDecryption: the dropped holder's share of the sum

KEYGEN, JOINT and BACKUP run once per session, in its first round (``session=None``: the
round's nodes are the committee); later rounds take the first round's
:attr:`AggregationResult.session`. RELEASE and RECOVER repeat for each dropped holder.

Weighting: a node with weight ``w <= M`` encrypts ``M * (w/M [x, 1])`` (the decryption error
is absolute, so the larger scale makes the average ``M`` times more precise); the server
only adds ciphertexts, so the flooding of the partial decryptions is sized from fresh
ciphertexts; the fused sum divided by ``M`` is ``[sum w/M x, sum w/M]``, the server takes
``sum(w x) / sum(w)`` and ``M * sum(w/M)`` within :func:`fedavg_error_bound`.

Threat models
-------------

*Honest-but-curious* (no roster; :class:`~fedcrypt.errors.HonestButCuriousWarning`), the
behaviour of the Flower adapter so far: the server follows the protocol and looks at
everything. No coalition of fewer than ``n`` key holders (``t`` with
``recovery_threshold = t``) and the server decrypts an upload; the server learns the sum. A
server that deviates can (1) present one upload, relabelled as an aggregate, or a
ciphertext of its own making to the holders: blob headers are not authenticated, and a
flooded partial decryption of a ciphertext the server chose is not covered by the
flooding, which is sized for honest ciphertexts (a chosen ``c1`` can expose a key share);
(2) substitute keys in the key chain and the transport keys of the backup.

*Malicious server* (``roster``): every node holds a :class:`~fedcrypt.identity.NodeIdentity`
on the federation's roster, handed to every node out of band and pinned by digest.

1. *Authenticated key chain.* Holder ``i`` signs its link: the SHA-256 of the running key
   it extended and of the key it produced, and its transport key, bound to the roster
   digest, the session, the parameters, the committee (node ids in party order), its index,
   node and member. Holder ``i`` extends only holder ``i-1``'s signed link; at JOINT every
   holder checks the whole chain (``n`` links, each signed by a distinct roster member,
   each extending the one before, its own link unchanged) and that the joint key is the
   last link's. Key backups (and released pieces) are signed by their sender, bound to
   the session and committee. A substituted running key, joint key, transport key or
   backup is refused (:class:`~fedcrypt.errors.InvalidSignature`,
   :class:`~fedcrypt.errors.ProtocolViolationError`) and nothing is generated, sealed or
   stored.
2. *Signed uploads.* Each upload is signed over (protocol label, roster digest, round id,
   joint key fingerprint, node, member, SHA-256 of the blob, layout digest).
3. *Each holder sums what it decrypts.* A server-made aggregate cannot be told from one
   relabelled upload, so with a roster the server sends no sum: every key holder receives
   the signed uploads, checks each (distinct committee members and nodes, this round, this
   joint key, weight ``M``, one layout), sums them itself and partially decrypts only a sum
   of at least ``min_contributions`` of them. A stand-in rebuilds a dropped holder's share
   only for the sum it kept from its own partial decryption of the same round: the stand-in
   is a holder whose own share was fused this round, so it checked, summed and decrypted
   that set itself, and a RecoverRequest carries no sum the server could choose; the
   dropped holder's share is of the very set the stand-in's own share is of, so the sets
   released in a round stay equal or disjoint (4.) with no second check, and a stand-in
   refuses a RecoverRequest of a round it kept no sum of. *Cost*: each of the ``n`` holders
   downloads every upload of the set (``n`` uploads instead of one aggregate) and sums
   them; the server keeps the signed uploads until DECRYPT in a temporary file (memory:
   their signatures and digests), sums them from it once for the fusion, and streams them
   to the holders in parts of at most ``part_bytes``, every holder in lockstep on one part
   read from the file (memory one aggregate, one upload and one part, as without a roster;
   one more exchange per part); a holder keeps its running sum in its state bytes between
   parts, and the aggregate of its last partial decryption (one aggregate) for RECOVER.
4. *One set per round.* Every uploader confirms (signs) the set of ``(member, node, upload
   digest)`` the server will sum, once per round and only with its own upload in it
   unchanged; a holder decrypts a set only with the confirmation of every member in it, so
   two sets decrypted in one round are equal or disjoint and no difference of two
   overlapping sums isolates an upload. *Cost*: one more exchange, and a node that drops
   between its upload and its confirmation ends the round without a decryption.
5. Each holder releases its own partial decryption at most once per round id and stands
   in for a dropped holder at most once per round id (round ids increasing), and answers
   each aggregate once; a holder releases backup pieces for at most ``n - t`` dropped
   holders per session (:meth:`~fedcrypt.he.threshold.KeyHolder.release_backup`).

**Claim.** Let the server be malicious and every committee member follow the protocol
(none colludes with the server). Then every partial decryption a node releases, with its
own key share or as a stand-in, is of a sum of at least ``min_contributions`` uploads made
by distinct committee members in one round under the session's joint key, the sums
released in one round are of equal or disjoint sets of uploads, and the server learns
nothing else about any upload beyond its public header (length, key fingerprint, the
weight ``M``) and its layout digest; in particular it never obtains one upload, or the
difference of two overlapping sums, in the clear. Conditions: Ed25519 is EUF-CMA secure
and the roster is authentic (it reached every node out of band and its digest is pinned);
RLWE is hard at the parameters of :class:`~fedcrypt.he.threshold.ThresholdParams`; the
X25519/HKDF/AES-GCM channel of the key backup is secure; OpenFHE's noise flooding hides a
key share in the partial decryptions of honestly made ciphertexts (Li-Micciancio 2021;
``statistical_security`` bits). Beyond the claim: colluding committee members count
towards ``min_contributions`` (a sum with ``c`` of them reveals the sum of the other
uploads in it, as in any secure aggregation); a colluding member that signs a ciphertext
of its own making as its upload can choose the ``c1`` of a sum and expose the holders' key
shares (no proof of well-formed encryption is checked); with ``recovery_threshold = t``
the server names the dropped holders and the stand-ins, so a colluding stand-in receives
backup pieces, and ``2t - n`` colluding holders can collect every key share through
RELEASE: recovery keeps the claim only when no holder colludes; a holder that deviates
in the key chain can restart it (a rogue key) and cut the holders before it out of the
joint key. What the server still chooses: the session and its committee, which nodes
take part in a round, and (with equal-or-disjoint sets) a partition of the uploaders into
groups of at least ``min_contributions``; and, as in any secure aggregation, new groups
each round (differential privacy, :mod:`fedcrypt.dp`, bounds what differencing across
rounds reveals).
"""

from .client import KeyState, ThresholdClient
from .config import ThresholdConfig, fedavg_error_bound
from .messages import (
    BackupReply,
    BackupRequest,
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    DecryptRequest,
    EncryptRequest,
    JointReply,
    JointRequest,
    KeygenReply,
    KeygenRequest,
    KeyLink,
    Message,
    MessageType,
    PartialDecryption,
    RecoverRequest,
    ReleaseReply,
    ReleaseRequest,
    SignedBackup,
    Stage,
    SumAck,
    SumPart,
    Upload,
    decode_message,
)
from .server import PART_BYTES, AggregationResult, RoundReport, ThresholdRoundServer
from .session import SessionRecord
from .simulate import SimulationResult, simulate

__all__ = [
    "ThresholdConfig",
    "ThresholdClient",
    "ThresholdRoundServer",
    "KeyState",
    "Stage",
    "AggregationResult",
    "RoundReport",
    "SessionRecord",
    "SimulationResult",
    "simulate",
    "fedavg_error_bound",
    "Message",
    "MessageType",
    "decode_message",
    "KeyLink",
    "SignedBackup",
    "KeygenRequest",
    "KeygenReply",
    "JointRequest",
    "JointReply",
    "BackupRequest",
    "BackupReply",
    "EncryptRequest",
    "Upload",
    "ConfirmRequest",
    "Confirmation",
    "ConfirmedUpload",
    "DecryptRequest",
    "PartialDecryption",
    "ReleaseRequest",
    "ReleaseReply",
    "RecoverRequest",
    "SumPart",
    "SumAck",
    "PART_BYTES",
]
