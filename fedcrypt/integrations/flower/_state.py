"""What fedcrypt's Flower mods keep in ``Context.state``: one sealed record per protection.

Only ``Context.state`` survives between a node's messages (each may run in a fresh ClientApp
process), and what a mod keeps holds secrets (SecAgg keys and shares, a CKKS key, a threshold
key share). Each mod keeps one record ``{"sealed": bytes}`` (and, for tools, a public
``stage``) sealed under the node's :class:`~fedcrypt.identity.StateKey`, bound to the record's
name, the run and the node; a record tampered with, sealed under another key, or moved raises
:class:`~fedcrypt.errors.DecryptionError` before the mod does anything. The key never enters
the Context: it is the key file named by node config ``fedcrypt-state-key`` (or the mod's
``state_key_path``), created owner-only if missing; else derived from the identity key
(``fedcrypt-identity`` or the mod's ``identity_path``); else the default key file
``$FLWR_HOME/fedcrypt/state.key`` (``~/.flwr`` without ``FLWR_HOME``), shared by the node's processes.

Each sealed record answers once: :func:`keep` replaces one (before the reply leaves) only after
:func:`spend` created (``O_CREAT | O_EXCL``) an empty file named by its SHA-256 in the node's
journal (node config ``fedcrypt-journal``, else ``$FLWR_HOME/fedcrypt/journal``; a folder per
run): two messages run from one Context snapshot answer once, after a restart too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from fedcrypt.errors import IdentityError, MalformedMessageError, UnexpectedMessageError
from fedcrypt.identity import NodeIdentity, StateKey

__all__ = ["NODE_STATE_KEY", "NODE_IDENTITY", "NODE_JOURNAL", "default_state_key_path", "setting", "node_state_key", "spend",
           "keep", "kept"]

#: Node-config key: a file with this node's 32-byte state key (created if it does not exist).
NODE_STATE_KEY = "fedcrypt-state-key"
#: Node-config key: the node's identity key file (PKCS#8 PEM, :class:`~fedcrypt.identity.NodeIdentity`).
NODE_IDENTITY = "fedcrypt-identity"
#: Node-config key: the folder of this node's journal of spent states (node-local, kept across restarts).
NODE_JOURNAL = "fedcrypt-journal"


def default_state_key_path(name: str = "state.key") -> Path:
    """``$FLWR_HOME/fedcrypt/state.key``, or ``~/.flwr/fedcrypt/state.key`` without ``FLWR_HOME`` (``name``: another file)."""
    home = os.environ.get("FLWR_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".flwr") / "fedcrypt" / name


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


def spend(ctxt: Any, record: str) -> None:
    """Write into the node's journal that the state sealed in ``ctxt.state[record]`` (if any) has answered.

    Raises:
        UnexpectedMessageError: it has answered before (a second message from one snapshot).
        IdentityError: the journal cannot be written.
    """
    if record not in ctxt.state.keys():
        return
    name = hashlib.sha256(b"fedcrypt/flower-journal/v1" + bytes(ctxt.state[record]["sealed"])).hexdigest()
    folder = Path(setting(ctxt, NODE_JOURNAL) or default_state_key_path("journal")) / str(ctxt.run_id)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        if hasattr(os, "O_DIRECTORY"):  # the entry outlives a crash, not only the process (POSIX)
            handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
    except FileExistsError:
        raise UnexpectedMessageError(f"{record}: this sealed state answered a message already (a second message from "
                                     "one Context snapshot)", party=ctxt.node_id) from None
    except OSError as exc:
        raise IdentityError(f"cannot write the fedcrypt journal ({type(exc).__name__}); name a writable folder in "
                            f"node config {NODE_JOURNAL}") from None


def keep(ctxt: Any, key: StateKey, record: str, state: bytes | None, **public: str) -> None:
    """:func:`spend` ``ctxt.state[record]``, then seal ``state`` there (``None``: drop it; ``public``: clear-text fields)."""
    from flwr.app import ConfigRecord

    spend(ctxt, record)
    if state is None:
        ctxt.state.pop(record, None)
        return
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
