"""fedcrypt for Flower's Message API (extra ``flower``): transport only, one module per protection.

* :mod:`.secagg` - SecAgg / SecAgg+ (:class:`SecAggGrid`, :class:`SecAggWorkflow`,
  :data:`secagg_mod`), re-exported here;
* :mod:`.ckks` - single-key CKKS (extra ``he``): ``CkksGrid``, ``CkksWorkflow``, ``ckks_mod``;
* :mod:`.threshold` - threshold CKKS (extra ``threshold``): ``ThresholdGrid``,
  ``ThresholdWorkflow``, ``threshold_mod``;
* :mod:`.testing` - :class:`~.testing.FlowerClients`, real ClientApp endpoints for the
  attacks of :mod:`fedcrypt.testing`.

Each maps Flower messages to the bytes of a sans-IO core (:mod:`fedcrypt.secagg`,
:mod:`fedcrypt.he.round`, :mod:`fedcrypt.he.threshold`) and back; the cores decide
everything. Every workflow folds replies into its core object as they are pulled, and
every mod keeps its state sealed in ``Context.state`` (:mod:`._state`).
"""

from fedcrypt.secagg.setup import identify_bytes, round_binding

from ._common import (
    NODE_ROSTER,
    NODE_ROSTER_DIGEST,
    Layout,
    average_reply,
    bytes_field,
    check_fields,
    check_records,
    flat_update,
    pack_nodes,
    split_train_reply,
    strategy_reply,
    unpack_nodes,
)
from ._state import NODE_IDENTITY, NODE_STATE_KEY
from .secagg import (
    IDENTIFY_RECORD,
    JOINED,
    NODE_MAX_COLLUDERS,
    RECORD,
    STATE,
    SecAggGrid,
    SecAggMod,
    SecAggRoundReport,
    SecAggWorkflow,
    kept_stage,
    secagg_mod,
    train_digest,
)

__all__ = [
    "RECORD",
    "STATE",
    "JOINED",
    "IDENTIFY_RECORD",
    "NODE_IDENTITY",
    "NODE_STATE_KEY",
    "NODE_ROSTER",
    "NODE_ROSTER_DIGEST",
    "NODE_MAX_COLLUDERS",
    "SecAggMod",
    "secagg_mod",
    "SecAggWorkflow",
    "SecAggGrid",
    "SecAggRoundReport",
    "kept_stage",
    "train_digest",
    "round_binding",
    "identify_bytes",
    "check_records",
    "check_fields",
    "bytes_field",
    "pack_nodes",
    "unpack_nodes",
    "Layout",
    "split_train_reply",
    "flat_update",
    "average_reply",
    "strategy_reply",
]
