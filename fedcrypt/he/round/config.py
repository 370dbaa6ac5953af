"""The single-key CKKS round's parameters (:class:`CkksConfig`) and its error bound.

Invariants:

* a :class:`CkksConfig` that constructs is safe to run: the minimum number of
  contributions fits the parameters' capacity, the FedAvg scaling ``w/M`` keeps every
  upload within the parameters' weight bound (uploads are added with weight 1), and with
  a roster the malicious-server mode is on (:attr:`CkksConfig.threat_model`);
* :meth:`CkksConfig.to_bytes` is canonical (one config, one encoding) and its digest binds
  a node's stored state to the config it was made under.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Iterable

from fedcrypt.he._round_common import layout_digest
from fedcrypt.he.params import CkksParams
from fedcrypt.identity import Roster

__all__ = ["CkksConfig", "KEY_SETUPS", "fedavg_error_bound", "layout_digest"]

#: How a round's nodes get the CKKS key: ``"dealer"`` (in-band, sealed by one node to the
#: others through the server) or ``"file"`` (every node loads a key file out of band).
KEY_SETUPS = ("dealer", "file")
_CONFIG_LABEL = b"fedcrypt/he/round-config/v1"


@dataclass(frozen=True, slots=True)
class CkksConfig:
    """Parameters of a single-key CKKS aggregation round, shared by the nodes and the server.

    Every node holds the group's CKKS secret key (Cheon-Kim-Kim-Song 2017, single key); a
    node with FedAvg weight ``w`` (at most ``M = max_weight``) uploads the symmetric RLWE
    encryption of ``w/M * [x, 1]``; the uploads are added with weight 1 each; a node that
    holds the key decrypts the sum (flooded, Li-Micciancio 2021), from which the server
    takes ``sum(w x) / sum(w)`` and the total weight ``M * sum(w/M)``.

    Two threat models, named by :attr:`threat_model`:

    * ``"malicious-server"`` (``roster`` given): every node has an identity on the roster;
      the dealer's key transport is signed, every upload is signed, every member of the
      summed set confirms that set once per round, and a decryptor sums the signed uploads
      itself (see :mod:`fedcrypt.he.round`);
    * ``"honest-but-curious"`` (no roster): the server must follow the protocol; the
      objects emit :class:`~fedcrypt.errors.HonestButCuriousWarning`.

    Args:
        params: the CKKS parameters a dealer generates the key with (a key file carries
            its own). ``params.max_weight`` may be 1: uploads are added with weight 1.
        min_contributions: the fewest uploads a decryptor decrypts a sum of (at least 2, at
            most ``params.num_clients``); a node's own floor as well as the server's.
        max_weight: ``M``, the largest FedAvg weight a node may claim.
        decryptors: how many nodes decrypt each sum (the server's choice; with more than
            one their results must be bit-identical).
        key_setup: ``"dealer"`` or ``"file"`` (:data:`KEY_SETUPS`).
        roster: the federation's roster (pinned by digest by whoever loaded it); turns on
            the malicious-server mode.

    Raises:
        TypeError / ValueError: a field out of its bounds; the message names it.
    """

    params: CkksParams
    min_contributions: int = 2
    max_weight: float = 1000.0
    decryptors: int = 2
    key_setup: str = "dealer"
    roster: Roster | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.params, CkksParams):
            raise TypeError(f"params must be CkksParams, got {type(self.params).__name__}")
        for name in ("min_contributions", "decryptors"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 2 <= self.min_contributions <= self.params.num_clients:
            raise ValueError(f"min_contributions must be in [2, params.num_clients={self.params.num_clients}], got {self.min_contributions}")
        if self.params.clip < 1.0 or self.params.max_weight < 1.0:
            raise ValueError(
                "params.clip and params.max_weight must be at least 1: the weight slot w/M (at most 1) "
                "is encrypted with the update and every upload is added with weight 1"
            )
        if self.decryptors < 1:
            raise ValueError(f"decryptors must be at least 1, got {self.decryptors}")
        weight = self.max_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"max_weight must be a positive finite number, got {weight!r}")
        object.__setattr__(self, "max_weight", float(weight))
        if self.key_setup not in KEY_SETUPS:
            raise ValueError(f"key_setup must be one of {KEY_SETUPS}, got {self.key_setup!r}")
        if self.roster is not None and not isinstance(self.roster, Roster):
            raise TypeError(f"roster must be a Roster or None, got {type(self.roster).__name__}")
        if self.roster is not None and len(self.roster) < self.min_contributions:
            raise ValueError(f"the roster has {len(self.roster)} members, fewer than min_contributions={self.min_contributions}")

    @property
    def threat_model(self) -> str:
        """``"malicious-server"`` with a roster, else ``"honest-but-curious"``."""
        return "malicious-server" if self.roster is not None else "honest-but-curious"

    @property
    def roster_digest(self) -> bytes:
        """The roster's SHA-256 (32 zero bytes without a roster); bound into every signed statement."""
        return self.roster.digest() if self.roster is not None else bytes(32)

    def to_bytes(self) -> bytes:
        """Canonical encoding (the roster by its digest)."""
        raw = self.params.to_bytes()
        return b"".join(
            [
                _CONFIG_LABEL,
                struct.pack(">H", len(raw)),
                raw,
                struct.pack(
                    ">IdIB?", self.min_contributions, self.max_weight, self.decryptors, KEY_SETUPS.index(self.key_setup), self.roster is not None
                ),
                self.roster_digest,
            ]
        )

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).digest()


def fedavg_error_bound(params: CkksParams, weights: Iterable[float], max_weight: float) -> float:
    """Worst-case error of the FedAvg average of one CKKS round (per coordinate, ``|x| <= clip``).

    The decrypted numerator ``A = S + e1`` and denominator ``B = W + e2`` (``S = sum w/M x``,
    ``W = sum w/M``) each carry at most ``E = params.sum_error_bound(n unit weights)``, so
    ``|A/B - S/W| <= E (W + |S|) / (W (W - E))`` with ``|S| <= W clip``; float32 rounding
    of the result adds ``clip * 2^-23`` relative (here ``2^-22``).
    """
    ws = [float(w) / max_weight for w in weights]
    e = params.sum_error_bound([1.0] * len(ws))
    w = sum(ws)
    return e * (w + w * params.clip) / (w * (w - e)) + params.clip * 2.0**-22
