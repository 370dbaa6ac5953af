"""What fedcrypt's Flower mods keep in ``Context.state``: one sealed record per protection.

Every Flower message may run in a fresh ClientApp process; only ``Context.state`` survives
between messages, and what a mod keeps there holds secrets (SecAgg keys and shares, a CKKS
key, a threshold key share). So each mod keeps one record ``{"sealed": bytes}`` (plus, for
tools, a public ``stage``) sealed under the node's :class:`~fedcrypt.identity.StateKey`,
bound to the record's name, the run and the node. The key never enters the Context; it is
the key file named by node config ``fedcrypt-state-key`` (or the mod's ``state_key_path``),
created owner-only if missing; else derived from the identity key (``fedcrypt-identity`` or
the mod's ``identity_path``); else the default key file ``$FLWR_HOME/fedcrypt/state.key``
(``~/.flwr`` without ``FLWR_HOME``), shared by the node's processes. A record that was
tampered with, sealed under another key, or moved raises
:class:`~fedcrypt.errors.DecryptionError` before the mod does anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedcrypt.errors import IdentityError, MalformedMessageError
from fedcrypt.identity import NodeIdentity, StateKey

__all__ = ["NODE_STATE_KEY", "NODE_IDENTITY", "default_state_key_path", "setting", "node_state_key", "keep", "kept"]

#: Node-config key: a file with this node's 32-byte state key (created if it does not exist).
NODE_STATE_KEY = "fedcrypt-state-key"
#: Node-config key: the node's identity key file (PKCS#8 PEM, :class:`~fedcrypt.identity.NodeIdentity`).
NODE_IDENTITY = "fedcrypt-identity"


def default_state_key_path() -> Path:
    """``$FLWR_HOME/fedcrypt/state.key``, or ``~/.flwr/fedcrypt/state.key`` without ``FLWR_HOME``."""
    home = os.environ.get("FLWR_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".flwr") / "fedcrypt" / "state.key"


def setting(ctxt: Any, key: str) -> str | None:
    """A string setting of the node config (``None`` if absent or empty; IdentityError if not a string)."""
    value = ctxt.node_config.get(key) if ctxt.node_config is not None else None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise IdentityError(f"node config {key} must be a string, got {type(value).__name__}")
    return value


def node_state_key(ctxt: Any, *, key_path: str | None = None, identity_path: str | None = None) -> StateKey:
    """This node's state key (see the module docstring); only ``ctxt.node_config`` is read.

    Raises:
        IdentityError: a key or identity file that cannot be read, or a non-string setting.
    """
    path = setting(ctxt, NODE_STATE_KEY) or key_path
    if path is not None:
        return StateKey.from_file(path)
    identity = setting(ctxt, NODE_IDENTITY) or identity_path
    if identity is not None:
        return StateKey.from_identity(NodeIdentity.load(identity))
    return StateKey.from_file(default_state_key_path(), source="default-file")


def keep(ctxt: Any, key: StateKey, record: str, state: bytes, **public: str) -> None:
    """Seal ``state`` into ``ctxt.state[record]`` (``public``: clear-text fields for tools)."""
    from flwr.app import ConfigRecord

    sealed = key.seal(state, record=record, run_id=ctxt.run_id, node_id=ctxt.node_id)
    ctxt.state[record] = ConfigRecord({"sealed": sealed, **public})


def kept(ctxt: Any, key: StateKey, record: str) -> bytes | None:
    """The state sealed in ``ctxt.state[record]`` (``None``: none kept).

    Raises:
        MalformedMessageError: the record is not a sealed fedcrypt record.
        DecryptionError: sealed under another key, tampered with, or moved.
    """
    if record not in ctxt.state.keys():
        return None
    fields = ctxt.state[record]
    if set(fields.keys()) - {"sealed", "stage"} or "sealed" not in fields.keys():
        raise MalformedMessageError(f"{record} in Context.state is not a sealed fedcrypt record")
    return key.open(fields["sealed"], record=record, run_id=ctxt.run_id, node_id=ctxt.node_id)
