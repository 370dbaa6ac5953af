"""The single-key CKKS aggregation round, sans-IO: key set-up, uploads, sum, decryption.

Shaped like :mod:`fedcrypt.secagg`: :class:`CkksConfig` (frozen, validated), a node-side
:class:`CkksClient` fed messages or bytes and returning messages (one transition table,
its own ``to_state_bytes`` / ``from_state_bytes``), a server-side :class:`CkksServer` that
receives replies and, at the end of each stage, says which message goes to which node,
typed :class:`AggregationResult` and :class:`RoundReport`, and :func:`simulate`. A
transport (Flower, say) only moves the bytes.

One round (``node`` is the recipient of a request and the sender of a reply)::

    CONTEXT  server -> every node     ContextRequest
             node -> server           ContextReply: its key's public context, or a fresh
                                      X25519 key (no key yet); signed with a roster
    DEAL     server -> dealer         DealRequest: the keyless peers' replies, relayed
             dealer -> server         DealReply: the new key's public context, its X25519
                                      key, one sealed key per peer; signed with a roster
    INSTALL  server -> each peer      InstallRequest: its sealed key, the dealer's statement
             peer -> server           InstallReply: the installed key's public context
    ENCRYPT  server -> key holders    EncryptRequest: the key's fingerprint
             holder -> server         Upload: the blob of w/M * [x, 1]; signed with a roster
    CONFIRM  server -> uploaders      ConfirmRequest: the set of uploads summed (roster only)
             uploader -> server       Confirmation: its signature of that set
    DECRYPT  server -> decryptors     DecryptRequest: the aggregate (no roster), or every
                                      signed upload with its confirmation (roster); a set
                                      larger than ``part_bytes`` is streamed: SumPart 0 (the
                                      set's entries, the first uploads), SumPart 1, ... each
                                      answered by a SumAck, then a DecryptRequest with the
                                      last uploads
             decryptor -> server      Decryption: the flooded sum w/M * [sum w x, sum w]

DEAL and INSTALL run only for an in-band key set-up (``key_setup="dealer"``) with keyless
nodes: while no key is pinned and more nodes are keyless than hold the most reported key,
the lowest-id keyless node deals a new key; with a roster, one holder of the round's
key deals it to keyless late joiners (without a roster a holder never deals). With
``key_setup="file"`` every node loads the same key file (:meth:`KeyOwner.to_bytes` with the
secret key) and the server takes the key most nodes report (the pinned one, once pinned),
refusing nodes with another.

Weighting: a node with weight ``w <= M`` uploads ``w/M * [x, 1]``; uploads are added with
weight 1; the decrypted sum is ``[sum w/M x, sum w/M]``, so the server gets
``sum(w x) / sum(w)`` and ``M * sum(w/M)`` without seeing any ``w``. The error is within
:func:`fedavg_error_bound`.

Threat models
-------------

*Honest-but-curious* (no roster; :class:`~fedcrypt.errors.HonestButCuriousWarning`): the
server follows the protocol and looks at everything. It never holds the secret key, so by
RLWE it learns nothing about an upload, and the decryptors tell it only the sum. A server
that deviates can (1) substitute X25519 keys in the dealer set-up and learn the key, and (2)
send one node's upload, relabelled as an aggregate, to a decryptor: blob headers are not
authenticated, and a decryptor's checks (an aggregate-kind header counting at least
``min_contributions`` uploads of total weight equal to their count) do not stop it.

*Malicious server* (``roster``): every node holds a :class:`~fedcrypt.identity.NodeIdentity`
on the federation's roster, handed to every node out of band and pinned by digest.

1. *Authenticated key transport.* A keyless node signs its fresh X25519 key, bound to the
   round, the roster digest and its node id and member name. The dealer seals the key only
   to peers whose adverts verify against the roster, and signs its own X25519 key, the key's
   fingerprint and the list of peers; a peer opens its sealed key only under that
   signature, with its own advert unchanged in the list. A server that substitutes a key
   at DEAL or INSTALL gets :class:`~fedcrypt.errors.InvalidSignature` (or
   :class:`~fedcrypt.errors.IdentityError`), and nothing is sealed or installed.
2. *Signed uploads.* Each upload is signed over (protocol label, roster digest, round id,
   key fingerprint, node, member, SHA-256 of the upload blob, layout digest).
3. *The decryptor sums what it decrypts.* Signatures over single uploads do not prove that a
   ciphertext the server calls their sum is one: the server could send upload A's
   ciphertext as "the aggregate" with valid signatures of A, B and C, and the decryptor
   would reveal A. So with a roster the server computes no sum: a decryptor receives the
   signed uploads themselves, verifies each against the roster (distinct members and
   nodes, this round, this key's fingerprint, one layout), folds them with
   :class:`~fedcrypt.he.EncryptedSum` itself and decrypts only a set of at least
   ``min_contributions`` uploads. *Cost*: a decryptor downloads every upload of the set (n
   uploads instead of one aggregate) and sums them; the server keeps the n signed uploads
   until DECRYPT, in a temporary file, and streams them to each decryptor in parts of at
   most ``part_bytes`` (memory one upload plus one part, as without a roster; one more
   exchange per part).
4. *One set per round.* Signed uploads alone still let a server ask different decryptors
   for different, overlapping sets (``{A, B}`` of one, ``{A, C}`` and ``{B, C}`` of others)
   and solve for every single upload. So every uploader confirms (signs) the set of
   ``(member, node, upload digest)`` the server will sum, once per round and only if its own
   upload is in it unchanged, and a decryptor decrypts a set only with the confirmation of
   *every* member in it. Two sets decrypted in one round are then equal or disjoint: an
   honest node in both would have confirmed two sets. *Cost*: one more message exchange,
   and a node that drops between its upload and its confirmation ends the round without a
   decryption (a smaller set would need its members to confirm twice).
5. Kept from the honest-but-curious mode: at most one flooded decryption per upload a node
   made itself, whatever round ids the server sends.

**Claim.** Let the server be malicious and no roster member collude with it. Then every
decryption a node releases is of a sum of at least ``min_contributions`` uploads made by
distinct roster members in one round under the group's key, the sums released in one round
are of equal or disjoint sets of uploads, and the server learns nothing else about any
upload beyond its public header (length, layout digest, key fingerprint); in particular it
never obtains one upload, or the difference of two overlapping sums, in the clear.
Conditions: Ed25519 is EUF-CMA secure and the roster is authentic (it
reached every node out of band and its digest is pinned); RLWE is hard at the 128-bit
parameters of :class:`~fedcrypt.he.CkksParams`; X25519/HKDF/AES-GCM key transport is secure;
the flooding of :meth:`~fedcrypt.he.KeyOwner.decrypt` (Li-Micciancio 2021, noise ``2^15``
times the noise bound: about ``2^-16`` statistical distance per release) hides the key at
the stated precision *for honestly formed ciphertexts*, which every summed upload is
because an honest member signed it. A colluding roster member breaks this even without
the key: its signed upload may be forged (``(0, K)`` decrypts to ``K s``: the key), and a
forged zero upload in a set with one honest upload reveals that upload (attacker review 3,
``tests/adversarial/review3``). Without a roster a deviating server forges the aggregate
itself and gets the key from one reply. Single-key CKKS offers no protection against a
colluding member; threshold CKKS (:mod:`fedcrypt.he.threshold`) is the direction. What the server still
chooses: which nodes take part in a round, and a partition of the uploaders into disjoint
groups of at least ``min_contributions`` each (it learns each group's sum), as in SecAgg+;
and, as in any secure aggregation, new groups each round: a node whose update does not
change from round to round can be differenced across rounds (differential privacy,
:mod:`fedcrypt.dp`, bounds what that reveals).
"""

from .client import CkksClient, KeyState
from .config import KEY_SETUPS, CkksConfig, fedavg_error_bound, layout_digest
from .messages import (
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    ContextReply,
    ContextRequest,
    DealReply,
    DealRequest,
    Decryption,
    DecryptRequest,
    EncryptRequest,
    InstallReply,
    InstallRequest,
    Message,
    MessageType,
    Stage,
    SumAck,
    SumPart,
    Upload,
    decode_message,
)
from .server import PART_BYTES, AggregationResult, CkksServer, RoundReport
from .simulate import SimulationResult, simulate

__all__ = [
    "CkksConfig",
    "CkksClient",
    "CkksServer",
    "KeyState",
    "Stage",
    "AggregationResult",
    "RoundReport",
    "SimulationResult",
    "simulate",
    "fedavg_error_bound",
    "layout_digest",
    "KEY_SETUPS",
    "Message",
    "MessageType",
    "decode_message",
    "ContextRequest",
    "ContextReply",
    "DealRequest",
    "DealReply",
    "InstallRequest",
    "InstallReply",
    "EncryptRequest",
    "Upload",
    "ConfirmRequest",
    "Confirmation",
    "ConfirmedUpload",
    "DecryptRequest",
    "Decryption",
    "SumPart",
    "SumAck",
    "PART_BYTES",
]
