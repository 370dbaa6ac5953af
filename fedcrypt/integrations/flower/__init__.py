"""fedcrypt for Flower's Message API (extra ``flower``): transport only, one module per protection.

:mod:`.secagg` (SecAgg / SecAgg+, re-exported here), :mod:`.ckks` (single-key CKKS, extra
``he``), :mod:`.threshold` (threshold CKKS, extra ``threshold``) and :mod:`.testing`
(:class:`~.testing.FlowerClients`, real ClientApp endpoints for :mod:`fedcrypt.testing`'s
attacks). Each maps Flower messages to the bytes of a sans-IO core (:mod:`fedcrypt.secagg`,
:mod:`fedcrypt.he.round`, :mod:`fedcrypt.he.threshold`) and back; the cores decide
everything. Workflows fold replies into the core as they are pulled; mods keep their state
sealed in ``Context.state`` (:mod:`._state`).
"""

from fedcrypt.secagg.setup import identify_bytes, round_binding

from ._common import NODE_ROSTER, NODE_ROSTER_DIGEST, Layout, RoundReport, average_reply, bytes_field, check_fields
from ._common import check_records, flat_update, pack_nodes, split_train_reply, strategy_reply, unpack_nodes
from ._state import NODE_IDENTITY, NODE_STATE_KEY
from .secagg import IDENTIFY_RECORD, JOINED, NODE_MAX_COLLUDERS, RECORD, STATE, SecAggGrid, SecAggMod, SecAggRoundReport
from .secagg import SecAggWorkflow, kept_stage, secagg_mod, train_digest

__all__ = [
    "RECORD", "STATE", "JOINED", "IDENTIFY_RECORD", "NODE_IDENTITY", "NODE_STATE_KEY", "NODE_ROSTER", "NODE_ROSTER_DIGEST",
    "NODE_MAX_COLLUDERS", "SecAggMod", "secagg_mod", "SecAggWorkflow", "SecAggGrid", "SecAggRoundReport", "RoundReport",
    "kept_stage", "train_digest", "round_binding", "identify_bytes", "check_records", "check_fields", "bytes_field",
    "pack_nodes", "unpack_nodes", "Layout", "split_train_reply", "flat_update", "average_reply", "strategy_reply",
]
