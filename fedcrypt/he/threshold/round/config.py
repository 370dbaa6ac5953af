"""The threshold CKKS round's parameters (:class:`ThresholdConfig`) and its error bound.

Invariants:

* a :class:`ThresholdConfig` that constructs is safe to run: the parameters flood every
  partial decryption, the FedAvg scaling ``w/M`` fits the parameters' weight bound, the
  minimum number of contributions fits both the committee and the parameters' capacity,
  and with a roster the malicious-server mode is on (:attr:`ThresholdConfig.threat_model`);
* :meth:`ThresholdConfig.to_bytes` is canonical (one config, one encoding) and its digest
  binds a node's stored state to the config it was made under.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Iterable

from fedcrypt.identity import Roster

from ..params import ThresholdParams

__all__ = ["ThresholdConfig", "fedavg_error_bound"]

_CONFIG_LABEL = b"fedcrypt/he/threshold/round-config/v1"


@dataclass(frozen=True, slots=True)
class ThresholdConfig:
    """Parameters of a threshold CKKS round, shared by the nodes and the server.

    A committee of ``params.num_parties`` nodes runs OpenFHE's key chain once per session
    (Asharov et al. EUROCRYPT 2012: additive key shares ``s = sum_i s_i``, the joint public
    key built one holder at a time), optionally Shamir-backs its key shares up
    (``params.recovery_threshold = t``); in every round each node with FedAvg weight ``w``
    (at most ``M = max_weight``) uploads the encryption of ``w/M * [x, 1]`` under the
    joint key, and every key share partially decrypts the sum (flooded), by its holder or,
    for a dropped holder and ``t``-of-``n`` parameters, by a stand-in. The server fuses the
    shares into ``sum(w/M [x, 1])``, from which it takes ``sum(w x) / sum(w)`` and the
    total weight.

    Two threat models, named by :attr:`threat_model`:

    * ``"malicious-server"`` (``roster`` given): the key chain, the joint key and the key
      backups are signed by their holders; uploads are signed, every uploader confirms the
      summed set once per round, and a key holder (or stand-in) sums the signed uploads
      itself (see :mod:`fedcrypt.he.threshold.round`);
    * ``"honest-but-curious"`` (no roster): the server must follow the protocol; the
      objects emit :class:`~fedcrypt.errors.HonestButCuriousWarning`.

    Args:
        params: the threshold CKKS parameters; ``params.num_parties`` is the committee's
            size and ``params.flooding`` must be on.
        min_contributions: the fewest uploads a holder partially decrypts a sum of (at
            least 2, at most the committee and ``params.num_clients``).
        max_weight: ``M``, the largest FedAvg weight a node may claim (at most
            ``params.max_weight``: a node encrypts ``M * (w/M [x, 1])``).
        roster: the federation's roster (pinned by digest by whoever loaded it); turns on
            the malicious-server mode.

    Raises:
        TypeError / ValueError: a field out of its bounds; the message names it.
    """

    params: ThresholdParams
    min_contributions: int = 2
    max_weight: float = 1.0
    roster: Roster | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.params, ThresholdParams):
            raise TypeError(f"params must be ThresholdParams, got {type(self.params).__name__}")
        if not self.params.flooding:
            raise ValueError("params.flooding must be on: an unflooded partial decryption leaks the key share")
        value = self.min_contributions
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"min_contributions must be an int, got {type(value).__name__}")
        limit = min(self.params.num_parties, self.params.num_clients)
        if not 2 <= value <= limit:
            raise ValueError(
                f"min_contributions must be in [2, {limit}] (the committee of params.num_parties="
                f"{self.params.num_parties} and params.num_clients={self.params.num_clients}), got {value}"
            )
        weight = self.max_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"max_weight must be a positive finite number, got {weight!r}")
        if weight > self.params.max_weight:
            raise ValueError(f"max_weight={weight:g} exceeds params.max_weight={self.params.max_weight} (a node encrypts M times its scaled update)")
        object.__setattr__(self, "max_weight", float(weight))
        if self.roster is not None and not isinstance(self.roster, Roster):
            raise TypeError(f"roster must be a Roster or None, got {type(self.roster).__name__}")
        if self.roster is not None and len(self.roster) < self.params.num_parties:
            raise ValueError(f"the roster has {len(self.roster)} members, fewer than the committee's params.num_parties={self.params.num_parties}")

    @property
    def threat_model(self) -> str:
        """``"malicious-server"`` with a roster, else ``"honest-but-curious"``."""
        return "malicious-server" if self.roster is not None else "honest-but-curious"

    @property
    def roster_digest(self) -> bytes:
        """The roster's SHA-256 (32 zero bytes without a roster); bound into every signed statement."""
        return self.roster.digest() if self.roster is not None else bytes(32)

    @property
    def params_digest(self) -> bytes:
        """SHA-256 of the parameters' canonical bytes; bound into every key-chain statement."""
        return hashlib.sha256(self.params.to_bytes()).digest()

    def to_bytes(self) -> bytes:
        """Canonical encoding (the roster by its digest)."""
        raw = self.params.to_bytes()
        return b"".join(
            [
                _CONFIG_LABEL,
                struct.pack(">H", len(raw)),
                raw,
                struct.pack(">Id?", self.min_contributions, self.max_weight, self.roster is not None),
                self.roster_digest,
            ]
        )

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).digest()


def fedavg_error_bound(params: ThresholdParams, weights: Iterable[float], max_weight: float) -> float:
    """Worst-case error of one round's FedAvg average (per coordinate, ``|w/M x| <= clip``).

    The fused numerator ``A = S + e1`` and denominator ``B = W + e2`` (``S = sum w/M x``,
    ``W = sum w/M``) each carry at most ``E = params.sum_error_bound() / M`` (the nodes
    encrypt ``M`` times these sums), so
    ``|A/B - S/W| <= E (W + |S|) / (W (W - E))`` with ``|S| <= n clip``; float32 rounding of
    the result adds ``2^-22`` relative to the average's magnitude (at most ``n clip / W``).

    Raises:
        ValueError: the total weight is not above the decryption error (no bound).
    """
    ws = [float(w) / max_weight for w in weights]
    e = params.sum_error_bound() / max_weight
    w = math.fsum(ws)
    s = len(ws) * params.clip
    if not w > e:
        raise ValueError("the total weight is below the decryption error: no bound")
    return e * (w + s) / (w * (w - e)) + (s / w) * 2.0**-22
