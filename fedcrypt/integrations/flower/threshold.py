"""Threshold CKKS for Flower's Message API (extras ``threshold`` and ``flower``; OpenFHE is
CPython 3.10 only, where the index serves flwr up to 1.30, which this is tested with): a
transport over the sans-IO round of :mod:`fedcrypt.he.threshold.round`
(:class:`~._common.CoreMod`, :class:`~._common.CoreWorkflow`).

:class:`ThresholdMod` keeps the node's :class:`~fedcrypt.he.threshold.round.ThresholdClient`
(key share included) sealed in ``Context.state``; :class:`ThresholdGrid` (with
:class:`ThresholdWorkflow`) runs each strategy train round as one
:class:`~fedcrypt.he.threshold.round.ThresholdRoundServer` round: the first sets up a session
whose committee is its nodes, later ones carry its record; the strategy receives
``sum(w x) / sum(w)`` (within :func:`fedavg_error_bound`) and the total weight. Wire format:
one ConfigRecord :data:`RECORD` per message, ``stage`` and ``payload`` (a round message:
KEYGEN, JOINT, BACKUP, ENCRYPT, CONFIRM, DECRYPT, RELEASE, RECOVER), with the strategy's
train records on ENCRYPT requests and ``layout`` on their replies.

Nodes and server hold the same :class:`~fedcrypt.he.threshold.round.ThresholdConfig`
(:func:`default_config`; the committee's size is part of it). A roster (the node's credentials,
:class:`~._common.CoreMod`; the server's config's roster) runs the malicious-server mode; without
one, mod and workflow log once that they run honest-but-curious (SECURITY.md: what each defends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fedcrypt.he.threshold import ThresholdParams, load_openfhe

load_openfhe()  # MissingExtraError naming 'threshold' and the Pythons

from fedcrypt.he.threshold.round import SessionRecord, Stage, ThresholdClient, ThresholdConfig, ThresholdRoundServer  # noqa: E402
from fedcrypt.he.threshold.round import Upload, decode_message, fedavg_error_bound  # noqa: E402

from ._common import CoreMod, CoreWorkflow, RoundReport, WorkflowGrid  # noqa: E402

__all__ = [
    "RECORD", "STATE", "default_config", "ThresholdMod", "ThresholdWorkflow", "ThresholdGrid", "ThresholdRoundReport",
    "fedavg_error_bound",
]

#: Name of the ConfigRecord that carries the threshold round's messages.
RECORD = "fedcrypt.threshold"
#: Name of the sealed record in ``Context.state`` with the node's client (its key share included).
STATE = "fedcrypt.threshold.state"


def default_config(
    num_parties: int, *, preset: str = "wide", clip: float = 4.0, capacity: int = 100, max_weight: float = 1000.0,
    recovery_threshold: int = 0, min_contributions: int = 2,
) -> ThresholdConfig:
    """A threshold round's config for a committee of ``num_parties`` nodes.

    :meth:`ThresholdParams.preset <fedcrypt.he.threshold.ThresholdParams.preset>` measures
    OpenFHE's noise, so two builds can differ: build the config once and give the same one
    to the server and every node (its ``params.to_bytes()`` travel as a file or a run-config
    value; ``ThresholdParams.from_bytes``): a node refuses state made under another config.

    Args:
        preset: the :class:`~fedcrypt.he.threshold.ThresholdParams` preset (``"wide"``:
            ``capacity * clip <= 2^57``; ``"compact"``: ``<= 128``, half the bytes).
        clip: L-infinity clip of a weighted coordinate ``w/M * x``.
        capacity: the most uploads one sum may hold.
        max_weight: ``M``, the largest FedAvg weight a node may claim.
        recovery_threshold: ``t`` of the t-of-n key backup (0: n-of-n, a dropped holder ends
            the round); in ``(n/2, n)``.
        min_contributions: the fewest uploads a holder partially decrypts a sum of.

    Raises:
        ValueError: parameters the preset cannot hold, or out of their bounds.
    """
    params = ThresholdParams.preset(
        preset, num_parties=num_parties, num_clients=capacity, clip=clip, max_weight=math.ceil(max_weight),
        recovery_threshold=recovery_threshold,
    )
    return ThresholdConfig(params, min_contributions=min_contributions, max_weight=max_weight)


class ThresholdMod(CoreMod[ThresholdConfig]):
    """A Flower ClientApp mod: the node side of threshold CKKS (key holder and client).

    Math and threat model: those of :class:`~fedcrypt.he.threshold.round.ThresholdClient`
    (OpenFHE's threshold CKKS: the key chain of Asharov et al. EUROCRYPT 2012, flooded
    partial decryptions after Li and Micciancio 2021, t-of-n backups; with a roster a signed
    key chain, signed uploads and holders that sum the confirmed uploads themselves).

    Args:
        config: the round's config on this node (the committee's size included).
        allow_plaintext, weight_key, state_key_path, identity_path, roster_path,
            roster_digest: see :class:`~._common.CoreMod`.
    """

    RECORD, STATE, STAGES, TRAIN_STAGE, LABEL = RECORD, STATE, Stage, Stage.ENCRYPT, "threshold"
    SENDS = "this node only sends encrypted updates"
    CLIENT, CONFIG, DECODE = ThresholdClient, ThresholdConfig, decode_message

    def __repr__(self) -> str:
        return (f"ThresholdMod(committee={self.config.params.num_parties}, min_contributions={self.config.min_contributions}, "
                f"allow_plaintext={self.allow_plaintext})")


@dataclass
class ThresholdRoundReport(RoundReport):
    """A threshold round's :class:`~._common.RoundReport`, with the core round's public facts:
    the key holders in party order (``committee``), the holders whose own shares were fused
    (``decryptors``), each dropped holder's stand-in (``stood_in``) and the joint key's fingerprint."""

    committee: list[int] = field(default_factory=list)
    decryptors: list[int] = field(default_factory=list)
    stood_in: dict[int, int] = field(default_factory=dict)
    fingerprint: str = ""


class ThresholdWorkflow(CoreWorkflow[ThresholdConfig]):
    """The server side of threshold CKKS over a Flower ``Grid``.

    Math and threat model: those of :class:`~fedcrypt.he.threshold.round.ThresholdRoundServer`
    (it never holds a key share). The first round's nodes (exactly the committee's size) set
    up the session; its record goes to every later round.

    Args:
        config: the round's config, required (:func:`default_config`; with a roster, the malicious-server mode).
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at ENCRYPT; default the strategy's timeout.
        poll_interval: seconds between two pulls of replies.
    """

    RECORD, REPORT, LABEL, SERVER, DECODE, CARRY = RECORD, ThresholdRoundReport, "threshold", ThresholdRoundServer, decode_message, "session"
    CONFIG = ThresholdConfig

    @property
    def params(self) -> ThresholdParams:
        """The session's parameters (``config.params``)."""
        return self.config.params

    @property
    def committee(self) -> tuple[int, ...]:
        """The session's key holders, in party order (empty before key generation)."""
        return () if self._carried is None else SessionRecord.from_bytes(self._carried).committee

    def _upload_layout(self, upload: Upload) -> tuple[bytes | None, int | None]:
        return upload.layout, None


class ThresholdGrid(WorkflowGrid):
    """A ``Grid`` whose train rounds are fedcrypt threshold-CKKS rounds (see :class:`~._common.WorkflowGrid`):
    ``strategy.start(grid=ThresholdGrid(grid, ThresholdWorkflow(config)), ...)``; the ClientApp adds a :class:`ThresholdMod`."""

    WORKFLOW = ThresholdWorkflow
