"""What the CKKS round roles share: the server's stage machinery, the node's message
dispatch, the identity check of a node, the head of a node's state bytes, and the
in-process simulation loop.

:class:`RoundServer` is the common base of :class:`~fedcrypt.he.round.CkksServer` and
:class:`~fedcrypt.he.threshold.round.ThresholdRoundServer`; :class:`RoundClient` that of
:class:`~fedcrypt.he.round.CkksClient` and :class:`~fedcrypt.he.threshold.round.ThresholdClient`.
A subclass names its protocol's messages, decoder, expected reply per stage, handlers and
stage closers; the base owns what the invariants of both say alike.

Invariants:

* :meth:`RoundServer.receive` validates a message completely (envelope: stage, type,
  round, node, a node not asked, a replay; then the protocol's handler) before anything
  is stored; a refused message raises a typed error and changes nothing but the report's
  ``refused`` entry; an untyped failure of a parser on a node's bytes is raised as
  :class:`~fedcrypt.errors.MalformedMessageError`;
* :meth:`RoundServer.end_stage` drops every node that did not answer the stage and hands
  over to the protocol's closer for the stage;
* :meth:`RoundClient.handle` refuses any (key state, message) pair outside the protocol's
  transition table and any message for another node with
  :class:`~fedcrypt.errors.UnexpectedMessageError`;
* a node's state bytes start with its protocol's magic and version, the config digest,
  its node id, member name and identity's public key (never the private key); decoding
  needs the same config and identity again.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Container, Generic, Iterable, Mapping, NoReturn, Protocol, Sequence, TypeVar

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.errors import (
    ContextMismatchError,
    FedcryptError,
    HonestButCuriousWarning,
    IdentityError,
    LocalProtocolError,
    ProtocolViolationError,
    SpecMismatchError,
    UnexpectedMessageError,
)
from fedcrypt.identity import NodeIdentity, Roster

from ._round_common import name_bytes, peer_bytes, read_member

__all__ = [
    "RoundServer",
    "RoundClient",
    "Stream",
    "check_part_bytes",
    "node_member",
    "state_head",
    "read_state_head",
    "optional",
    "present",
    "state_tail",
    "read_state_tail",
    "SimulationResult",
    "check_simulation_inputs",
    "run_simulation",
]


# ------------------------------------------------------------------------------ server
class _RoundConfig(Protocol):
    """What the base server reads of a protocol's config."""

    @property
    def roster(self) -> Roster | None: ...

    @property
    def min_contributions(self) -> int: ...


class _RoundReport(Protocol):
    """What the base server writes into a protocol's round report."""

    contributors: list[int]
    dropped: dict[int, str]
    refused: dict[int, str]
    aborted: str | None


class _Reply(Protocol):
    """The envelope of a node's reply, as the base server checks it."""

    @property
    def node(self) -> int: ...

    @property
    def round_id(self) -> int: ...


_ConfigT = TypeVar("_ConfigT", bound=_RoundConfig)
_ReportT = TypeVar("_ReportT", bound=_RoundReport)


class RoundServer(Generic[_ConfigT, _ReportT]):
    """The stage machinery of a round's server (a subclass is the protocol's server).

    Type parameters: the protocol's config and round report. Subclass attributes:
    ``_MESSAGES`` (the protocol's message classes), ``_DECODE`` (its
    ``decode_message``, a staticmethod), ``_EXPECTED`` (stage -> the reply type it
    accepts, or a tuple of them), ``_HANDLERS`` (reply type -> handler name), ``_CLOSERS`` (stage -> the name
    of the method that closes it), ``_DONE`` and ``_ABORTED`` (its final stages).
    """

    __slots__ = (
        "config",
        "round_id",
        "nodes",
        "_stage",
        "_begun",
        "_asked",
        "_answered",
        "_result",
        "_report",
        "_left_out",
        # assigned by the shared ENCRYPT / DECRYPT steps below (the subclass declares the rest of their state)
        "_sums",
        "_layout",
        "_length",
        "_entries",
        "_batch",
    )
    config: _ConfigT
    _report: _ReportT
    _MESSAGES: ClassVar[tuple[type, ...]]
    _DECODE: ClassVar[Callable[[bytes], Any]]
    _EXPECTED: ClassVar[Mapping[Any, type[_Reply] | tuple[type[_Reply], ...]]]
    _HANDLERS: ClassVar[Mapping[type, str]]
    _CLOSERS: ClassVar[Mapping[Any, str]]
    _DONE: ClassVar[Any]
    _ABORTED: ClassVar[Any]
    # the uploads and the summed set (ENCRYPT, CONFIRM; see :meth:`_end_encrypt`)
    _CONFIRM_REQUEST: ClassVar[type]
    _CONFIRM: ClassVar[Any]
    #: without a roster, one running sum per (layout digest, length) the uploads name
    _sums: dict[tuple[bytes, int], Any]
    #: the uploaders by (layout digest, length): the most common layout is the round's
    _by_layout: dict[tuple[bytes, int], list[int]]
    #: node -> (member, signature, SHA-256 of the blob, ...) of each signed upload (roster)
    _uploads: Any
    _layout: bytes | None
    _length: int | None
    _confirmations: dict[int, bytes]
    # the DECRYPT stage's set, streamed (with a roster; see :meth:`_request`)
    _DECRYPT_REQUEST: ClassVar[type]
    _SUM_PART: ClassVar[type]
    _spill: Any
    _aggregate: bytes
    _entries: tuple[tuple[str, int, bytes], ...]
    #: the streamed set's parts: node ids in entry order
    _parts: list[tuple[int, ...]]
    #: decrypting node -> the part (or the one DECRYPT request, index 0) it was sent last
    _progress: dict[int, int]
    #: the part last read from the spill file: (index, its confirmed uploads)
    _batch: tuple[int, tuple[Any, ...]] | None

    def _setup(self, config: object, config_type: type[_ConfigT], nodes: Iterable[int], round_id: int, stage: Any, warning: str) -> None:
        """Check and store what every round server takes; warn honest-but-curious without a roster."""
        if not isinstance(config, config_type):
            raise TypeError(f"config must be a {config_type.__name__}, got {type(config).__name__}")
        if not isinstance(round_id, int) or isinstance(round_id, bool) or not 0 <= round_id < 1 << 64:
            raise ValueError(f"round_id must be an integer in [0, 2^64), got {round_id!r}")
        node_list = list(nodes)
        if any(not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << 64 for n in node_list):
            raise ValueError("nodes must be integers in [0, 2^64)")
        if len(set(node_list)) != len(node_list) or not node_list:
            raise ValueError("nodes must be distinct, and at least one")
        if config.roster is None:
            warnings.warn(warning, HonestButCuriousWarning, stacklevel=3)
        self.config = config
        self.round_id = round_id
        self.nodes = tuple(sorted(node_list))
        self._stage = stage
        self._begun = False
        self._asked: set[int] = set()
        self._answered: set[int] = set()
        self._result: Any = None
        self._left_out: set[int] = set()  # uploaders refused by the plurality rule: their entry in ``refused`` stays

    @property
    def stage(self) -> Any:
        """The stage whose replies the server is collecting."""
        return self._stage

    @property
    def report(self) -> _ReportT:
        """What happened so far (public information only)."""
        return self._report

    @property
    def received(self) -> frozenset[int]:
        """Nodes whose reply for the current stage has been accepted."""
        return frozenset(self._answered)

    @property
    def result(self) -> Any:
        """The outcome, once the round is DONE."""
        if self._result is None:
            raise LocalProtocolError("the round has no result yet", party="server", round=self.round_id, stage=self._stage)
        return self._result

    def _begin(self) -> None:
        if self._begun:
            raise LocalProtocolError("the round has begun already", party="server", round=self.round_id, stage=self._stage)
        self._begun = True

    def receive(self, message: Any, *, sender: int | None = None) -> None:
        """Accept one node's reply (object or bytes).

        Args:
            message: the reply.
            sender: the node the transport received it from (authenticated by the transport);
                it must be the message's ``node``. With it, undecodable bytes are reported
                against that node.

        Raises:
            MalformedMessageError: bytes that do not decode, or a blob, key or context inside that does not.
            UnexpectedMessageError: wrong stage, type, round or node, a node not asked, or a replay.
            ProtocolViolationError / CryptoError / HEError: a reply no honest node sends.
        """
        node = sender
        try:
            if isinstance(message, (bytes, bytearray, memoryview)):
                message = type(self)._DECODE(bytes(message))
            elif not isinstance(message, self._MESSAGES):
                raise TypeError(f"expected a round message or its bytes, got {type(message).__name__}")
            if node is None:
                node = message.node
            self._check_envelope(message, sender)
            with peer_bytes(message.node, self._stage, self.round_id):
                getattr(self, self._HANDLERS[type(message)])(message)
        except FedcryptError as exc:
            if node is not None and node in self.nodes:
                self._report.refused[node] = f"{type(exc).__name__}: {exc}"
            raise
        self._answered.add(message.node)
        if message.node not in self._left_out:  # a key holder left out at ENCRYPT still decrypts: its upload stays refused
            self._report.refused.pop(message.node, None)

    def end_stage(self) -> dict[int, Any]:
        """Close the current stage: nodes that did not answer are dropped; the next messages by node.

        Raises:
            RoundAbortedError / ContextMismatchError / ProtocolViolationError / DecryptionError:
                the round cannot finish (the stage moves to ABORTED).
            LocalProtocolError: called before :meth:`begin` or after the round ended.
        """
        if not self._begun or self._stage in (self._DONE, self._ABORTED):
            raise LocalProtocolError("no stage is open", party="server", round=self.round_id, stage=self._stage)
        for node in sorted(self._asked - self._answered):
            self._report.dropped.setdefault(node, self._stage.name)
        return getattr(self, self._CLOSERS[self._stage])()

    def _check_envelope(self, message: Any, sender: int | None) -> None:
        stage = self._stage
        if sender is not None and message.node != sender:
            raise UnexpectedMessageError(
                f"a message naming node {message.node} came from node {sender}", party=sender, round=self.round_id, stage=stage
            )
        expected = self._EXPECTED.get(stage, ())
        if type(message) not in (expected if isinstance(expected, tuple) else (expected,)):
            raise UnexpectedMessageError(
                f"{type(message).__name__} is not accepted in this stage", party=message.node, round=self.round_id, stage=stage
            )
        if message.round_id != self.round_id:
            raise UnexpectedMessageError(f"a reply for round {message.round_id}", party=message.node, round=self.round_id, stage=stage)
        if message.node not in self._asked:
            raise UnexpectedMessageError("a reply from a node that was not asked in this stage", party=message.node, round=self.round_id, stage=stage)
        if message.node in self._answered:
            raise UnexpectedMessageError("a second reply in this stage (replay)", party=message.node, round=self.round_id, stage=stage)

    def _violation(self, text: str, node: int) -> ProtocolViolationError:
        return ProtocolViolationError(text, party=node, round=self.round_id, stage=self._stage)

    def _abort(self, error: FedcryptError) -> FedcryptError:
        self._stage = self._ABORTED
        self._report.aborted = f"{type(error).__name__}: {error}"
        return error

    def _plurality(self, by_layout: Mapping[tuple[bytes, int], list[int]]) -> tuple[tuple[bytes, int], list[int]] | None:
        """The (layout digest, length) most uploads name and its uploaders, increasing; None without uploads.

        No first-come layout: one node answering first with another layout would get every
        honest upload refused (attacker review 5). The other uploaders are refused in the
        report; a tie ends the round.
        """
        counts = sorted((len(nodes) for nodes in by_layout.values()), reverse=True)
        if not counts:
            return None
        if len(counts) > 1 and counts[0] == counts[1]:
            raise self._abort(SpecMismatchError(f"the uploads name {len(counts)} layouts, none by more nodes than another"))
        layout, chosen = max(by_layout.items(), key=lambda item: len(item[1]))
        for nodes in by_layout.values():
            for node in nodes if nodes is not chosen else ():
                self._left_out.add(node)
                self._report.refused[node] = (
                    f"SpecMismatchError: the upload of node {node} has another layout than the most uploads' ({len(chosen)} of {sum(counts)})"
                )
        return layout, sorted(chosen)

    # ------------------------------------------------------------------ ENCRYPT / CONFIRM: the summed set
    def _ended(self, text: str) -> FedcryptError:
        """The protocol's abort of the round with a :class:`~fedcrypt.errors.RoundAbortedError` of ``text``."""
        raise NotImplementedError

    def _start_decrypt(self, aggregate: bytes) -> dict[int, Any]:
        """The protocol's DECRYPT stage: ``aggregate`` (empty with a roster: the set is streamed) to its decrypting nodes."""
        raise NotImplementedError

    def _end_encrypt(self) -> dict[int, Any]:
        """Close ENCRYPT: the uploads of the most common layout are the round's (too few: abort); without a
        roster their sum goes to DECRYPT, with one their set (sorted entries) to its uploaders to confirm."""
        chosen = self._plurality(self._by_layout)
        contributors: list[int] = []
        if chosen is not None:
            (self._layout, self._length), contributors = chosen
        self._report.contributors = contributors
        if len(contributors) < self.config.min_contributions:
            raise self._ended(f"{len(contributors)} uploads arrived, fewer than min_contributions={self.config.min_contributions}")
        if self.config.roster is None:
            assert self._layout is not None and self._length is not None
            aggregate, self._sums = self._sums[(self._layout, self._length)].finish(), {}
            return self._start_decrypt(aggregate)
        self._entries = tuple(sorted((self._uploads[n][0], n, self._uploads[n][2]) for n in contributors))
        return self._next(self._CONFIRM, {n: self._CONFIRM_REQUEST(self.round_id, n, self._entries) for n in contributors})

    def _check_confirmed(self) -> None:
        """Close CONFIRM's check: every node of the set confirmed it, else the round ends (a set is fixed once sent)."""
        missing = sorted({n for _, n, _ in self._entries} - set(self._confirmations))
        if missing:
            raise self._ended(
                f"nodes {missing} did not confirm the set of uploads; a set is fixed once sent (its members "
                "confirm one set per round), so the round ends without a decryption"
            )

    # ------------------------------------------------------------------ DECRYPT: the set, streamed
    def _confirmed_upload(self, node: int) -> Any:
        """The protocol's confirmed upload of ``node`` as it goes to a decrypting node (its blob read from the spill file)."""
        raise NotImplementedError

    def _request(self, node: int, index: int) -> Any:
        """Part ``index`` of the set for ``node``: the one request without a roster or for a set of one part."""
        if self.config.roster is None:
            return self._DECRYPT_REQUEST(self.round_id, node, self._aggregate)
        if self._batch is None or self._batch[0] != index:  # read once, shared by every node at this part
            assert self._spill is not None
            self._batch = (index, tuple(self._confirmed_upload(n) for n in self._parts[index]))
        if index == len(self._parts) - 1:
            return self._DECRYPT_REQUEST(self.round_id, node, b"", self._batch[1], index)
        return self._SUM_PART(self.round_id, node, index, self._entries if index == 0 else (), self._batch[1])

    def _on_sum_ack(self, message: Any) -> None:
        """A node's acknowledgement of the part it was sent last (not the last part: that one is answered by a decryption)."""
        index = self._progress.get(message.node)
        if not self._parts or index is None or index == len(self._parts) - 1 or message.index != index:
            raise self._violation(f"an acknowledgement of part {message.index}, which was not the part sent", message.node)

    def _next_parts(self, done: Container[int]) -> None:
        """Close a DECRYPT step: nodes ``done`` (their decryption arrived) or silent (dropped, mid-stream too) leave
        the progress; the others acknowledged their part and are due the next."""
        for node in list(self._progress):
            if node in done or node not in self._answered:
                del self._progress[node]
            else:
                self._progress[node] += 1

    def _next(self, stage: Any, requests: dict[int, Any]) -> dict[int, Any]:
        self._stage = stage
        self._asked = set(requests)
        self._answered = set()
        return requests

    def _done(self, result: Any) -> dict[int, Any]:
        self._result = result
        self._stage = self._DONE
        self._asked, self._answered = set(), set()
        return {}


# ------------------------------------------------------------------------------ node
#: a node's open stream of a set: (round id, the set's entries, its layout digest, the next part's index, the sum so far)
Stream = tuple[int, tuple[tuple[str, int, bytes], ...], bytes, int, Any]


class RoundClient:
    """The message dispatch of a round's node (a subclass is the protocol's client), and the
    checks of a summed set streamed to it (:meth:`_stream_part`, :meth:`_set_sum`).

    Subclass attributes: ``_MESSAGES``, ``_DECODE`` (as :class:`RoundServer`) and
    ``_TRANSITIONS`` ((key state, message type) -> handler); instances have ``node``,
    ``_key_state``, ``_identity`` and ``_stream`` (the open :data:`Stream` or ``None``); a
    subclass defines ``_open_set``, ``_fold`` and ``_merged``.
    """

    __slots__ = ()
    _MESSAGES: ClassVar[tuple[type, ...]]
    _DECODE: ClassVar[Callable[[bytes], Any]]
    _TRANSITIONS: ClassVar[Mapping[tuple[Any, type], Callable[..., Any]]]
    node: int
    _key_state: Any
    _identity: NodeIdentity | None
    _stream: Stream | None
    _input: tuple[np.ndarray, bytes] | None
    _encrypted_round: int | None

    def handle(self, message: Any) -> Any:
        """Feed one server message (object or bytes); return the reply to send.

        Raises:
            MalformedMessageError: bytes that do not decode.
            UnexpectedMessageError: a message this key state does not accept, for another
                node, or a replay.
            ProtocolViolationError / CryptoError / IdentityError / HEError: a message no
                honest server sends (bad signature, another key, too few uploads, ...).
            LocalProtocolError: no input when an upload is due.
        """
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = type(self)._DECODE(bytes(message))
        elif not isinstance(message, self._MESSAGES):
            raise TypeError(f"expected a round message or its bytes, got {type(message).__name__}")
        handler = self._TRANSITIONS.get((self._key_state, type(message)))
        if handler is None:
            raise UnexpectedMessageError(
                f"{type(message).__name__} is not accepted with key state {self._key_state.name}",
                party=self.node,
                round=message.round_id,
                stage=message.STAGE,
            )
        if message.node != self.node:
            raise UnexpectedMessageError(f"message addressed to node {message.node}", party=self.node, round=message.round_id, stage=message.STAGE)
        return getattr(self, handler.__name__)(message)  # by name: a subclass may override a handler

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} holds a secret key and is not pickled; use to_state_bytes()")

    def _violation(self, text: str, message: Any) -> ProtocolViolationError:
        return ProtocolViolationError(text, party=self.node, round=message.round_id, stage=message.STAGE)

    def _unexpected(self, text: str, message: Any) -> UnexpectedMessageError:
        return UnexpectedMessageError(text, party=self.node, round=message.round_id, stage=message.STAGE)

    def _sign(self, statement: bytes) -> bytes:
        return self._identity.signing_key.sign(statement) if self._identity is not None else b""

    def _encrypt_input(self, message: Any, fingerprint: bytes, key: str) -> tuple[np.ndarray, bytes]:
        """An ``EncryptRequest``'s guards (the round's key is this node's ``fingerprint``, ``key``
        naming it in the error; a later round than the last encrypted, no replay; an input given);
        returns the input, (vector, layout digest)."""
        if not hmac.compare_digest(message.fingerprint, fingerprint):
            raise ContextMismatchError(f"node {self.node}: the round is under another {key} than this node's")
        if self._encrypted_round is not None and message.round_id <= self._encrypted_round:
            raise self._unexpected(
                f"an encrypt request for round {message.round_id}, but this node already encrypted for round {self._encrypted_round} (replay)",
                message,
            )
        if self._input is None:
            raise LocalProtocolError("no input was given (call set_input)", party=self.node, round=message.round_id, stage=message.STAGE)
        return self._input

    # ------------------------------------------------------------------ a streamed set (with a roster)
    def _open_set(self, message: Any, entries: tuple[tuple[str, int, bytes], ...]) -> tuple[tuple[str, int, bytes], ...]:
        """The protocol's checks of a set a node is asked to sum (its size, distinct members and nodes, who may be in it)."""
        raise NotImplementedError

    def _fold(self, message: Any, entries: tuple[tuple[str, int, bytes], ...], start: int, layout: bytes | None) -> tuple[Any, bytes]:
        """The protocol's checks of ``message.uploads`` as entries ``start, ...`` of the set; their sum (new) and the set's layout."""
        raise NotImplementedError

    def _merged(self, summed: Any, batch: Any) -> Any:
        """The protocol's way to add a part's ``batch`` to the stream's sum (in place, or to a copy)."""
        raise NotImplementedError

    def _next_part(self, message: Any, index: int) -> tuple[int, tuple[tuple[str, int, bytes], ...], bytes, Any]:
        """The open stream, if ``index`` is its next part for this round."""
        stream = self._stream
        if stream is None or stream[0] != message.round_id or stream[3] != index:
            raise self._unexpected(f"part {index} of a set, which is not the next part of the set this node is summing", message)
        return stream[0], stream[1], stream[2], stream[4]

    def _stream_part(self, message: Any) -> Stream:
        """A ``SumPart``: checked (part 0 opens the set, a later part is the open stream's next
        one and leaves at least its last upload to the ``DecryptRequest``) and added; returns the
        stream it leaves, for the caller to apply."""
        if not message.uploads:
            raise self._violation("a part of the set without an upload", message)
        if message.index == 0:
            entries = self._open_set(message, message.entries)
            if len(message.uploads) >= len(entries):
                raise self._violation("part 0 carries the whole set; a set of one part is one DecryptRequest", message)
            summed, layout = self._fold(message, entries, 0, None)
        else:
            _, entries, layout, summed = self._next_part(message, message.index)
            if summed.count + len(message.uploads) >= len(entries):
                raise self._violation("a SumPart carries the set's last upload; the last part is a DecryptRequest", message)
            batch, _ = self._fold(message, entries, summed.count, layout)
            summed = self._merged(summed, batch)
        return (message.round_id, entries, layout, message.index + 1, summed)

    def _set_sum(self, message: Any) -> tuple[tuple[tuple[str, int, bytes], ...], Any]:
        """A ``DecryptRequest`` with a roster: its set's entries and sum, of the whole set in it
        (``part`` 0) or of the open stream and its last part (which must complete the set)."""
        if message.part == 0:  # the whole set in this one request
            digests = tuple((i.upload.member, i.upload.node, hashlib.sha256(i.upload.blob).digest()) for i in message.uploads)
            entries = self._open_set(message, digests)
            summed, _ = self._fold(message, entries, 0, None)
            return entries, summed
        _, entries, layout, stream = self._next_part(message, message.part)
        folded = stream.count + len(message.uploads)
        if folded != len(entries):
            raise self._violation(f"the last part leaves {len(entries) - folded} of the set's {len(entries)} uploads out", message)
        batch, _ = self._fold(message, entries, stream.count, layout)
        return entries, self._merged(stream, batch)


def check_part_bytes(part_bytes: object) -> None:
    """A server's ``part_bytes`` (how many upload bytes one part of a streamed set holds) is a positive int."""
    if not isinstance(part_bytes, int) or isinstance(part_bytes, bool) or part_bytes < 1:
        raise ValueError(f"part_bytes must be a positive integer, got {part_bytes!r}")


def node_member(config: Any, identity: NodeIdentity | None, warning: str) -> str:
    """A node's roster name: with a roster its identity's (required), without one ``""``
    (an identity is refused) and :class:`~fedcrypt.errors.HonestButCuriousWarning`.

    Raises:
        IdentityError: the identity is not on the roster.
        ValueError: an identity without a roster, or none with one.
    """
    if config.roster is not None:
        if not isinstance(identity, NodeIdentity):
            raise ValueError("a round with a roster needs this node's identity (a NodeIdentity on the roster)")
        return config.roster.name_of(identity.public_bytes)
    if identity is not None:
        raise ValueError(f"an identity was given to a round without a roster: put the roster in {type(config).__name__}")
    warnings.warn(warning, HonestButCuriousWarning, stacklevel=3)
    return ""


# ------------------------------------------------------------------------------ state bytes
def optional(value: bytes | None) -> bytes:
    """A presence byte, then ``value`` if present."""
    return b"\x00" if value is None else b"\x01" + value


def present(reader: Reader, label: str) -> bool:
    """Read a presence byte written by :func:`optional`."""
    flag = reader.u8()
    if flag > 1:
        raise reader.error(f"presence byte of {label} is {flag}")
    return flag == 1


def state_head(magic: bytes, version: int, client: Any) -> bytes:
    """The head of a node's state bytes: magic, version, config digest, node, member, identity's public key."""
    identity: NodeIdentity | None = client._identity
    public = identity.public_bytes if identity is not None else b""
    return (
        magic
        + struct.pack(">B", version)
        + client.config.digest()
        + struct.pack(">Q", client.node)
        + name_bytes(client.member)
        + struct.pack(">B", len(public))
        + public
    )


def read_state_head(reader: Reader, magic: bytes, version: int, config: Any, identity: NodeIdentity | None) -> tuple[int, str]:
    """Read :func:`state_head`; returns the node id and member name.

    Raises:
        MalformedMessageError: bad magic, version or field.
        ContextMismatchError: another config's state.
        IdentityError: another identity (or none) than the state's.
    """
    if identity is not None and not isinstance(identity, NodeIdentity):
        raise TypeError(f"identity must be a NodeIdentity or None, got {type(identity).__name__}")
    if reader.take(4) != magic:
        raise reader.error("bad magic")
    found = reader.u8()
    if found != version:
        raise reader.error(f"unsupported version {found}")
    if not hmac.compare_digest(reader.take(32), config.digest()):
        raise ContextMismatchError("the node state was made under another round config")
    node = reader.u64()
    member = read_member(reader)
    public = reader.sized(32, "identity key", width=1, allow_empty=True)
    if len(public) not in (0, 32):
        raise reader.error("an identity key is 32 bytes")
    if config.roster is None:
        if identity is not None or public or member:
            raise IdentityError("the state or the caller names an identity, the round config has no roster")
    else:
        if identity is None or not hmac.compare_digest(identity.public_bytes, public):
            raise IdentityError("the state belongs to another identity than the one given (or none was given)")
        if config.roster.name_of(public) != member:
            raise reader.error("the member name is not the identity's")
    return node, member


def state_tail(upload: tuple[int, bytes, bytes] | None, confirmed: tuple[int, bytes] | None, given: tuple[np.ndarray, bytes] | None) -> bytes:
    """The tail of a node's state bytes: its last upload ``(round, blob digest, layout
    digest)``, its last confirmation ``(round, set digest)`` and its pending input
    ``(w/M [x, 1], layout digest)``, each behind a presence byte."""
    return b"".join(
        [
            optional(None if upload is None else struct.pack(">Q", upload[0]) + upload[1] + upload[2]),
            optional(None if confirmed is None else struct.pack(">Q", confirmed[0]) + confirmed[1]),
            optional(
                None if given is None else given[1] + struct.pack(">Q", given[0].shape[0]) + np.ascontiguousarray(given[0], dtype="<f8").tobytes()
            ),
        ]
    )


def read_state_tail(
    reader: Reader, max_values: int
) -> tuple[tuple[int, bytes, bytes] | None, tuple[int, bytes] | None, tuple[np.ndarray, bytes] | None]:
    """Read :func:`state_tail` (an input of 2 to ``max_values`` finite values)."""
    upload = (reader.u64(), reader.take(32), reader.take(32)) if present(reader, "the last upload") else None
    confirmed = (reader.u64(), reader.take(32)) if present(reader, "the last confirmation") else None
    given = None
    if present(reader, "the input"):
        layout = reader.take(32)
        count = reader.u64()
        if not 2 <= count <= max_values or 8 * count > reader.remaining:
            raise reader.error(f"an input of {count} values does not fit")
        values = np.frombuffer(reader.take(8 * count), dtype="<f8").astype(np.float64)
        if not np.isfinite(values).all():
            raise reader.error("the input is not finite")
        given = (values, layout)
    return upload, confirmed, given


# ------------------------------------------------------------------------------ simulation
@dataclass(frozen=True, slots=True, eq=False)
class SimulationResult:
    """Outcome and costs of one simulated round.

    Attributes:
        mean: the FedAvg average ``sum(w x) / sum(w)`` of the contributors (float64).
        total_weight: their total weight ``sum(w)``.
        contributors: the nodes whose uploads are in the sum, increasing.
        result: the server's ``AggregationResult``.
        report: the server's ``RoundReport``.
        upload_bytes: bytes of one upload message.
        decrypt_request_bytes: bytes of the request one decryptor downloads (with a roster:
            every signed upload; without: one aggregate).
        client_seconds: mean wall time a node spent in its protocol object.
        server_seconds: wall time the server spent in its protocol object.
        stage_seconds: server wall time per stage name.
    """

    mean: np.ndarray = field(repr=False)
    total_weight: float
    contributors: tuple[int, ...]
    result: Any
    report: Any
    upload_bytes: int
    decrypt_request_bytes: int
    client_seconds: float
    server_seconds: float
    stage_seconds: dict[str, float]

    def __repr__(self) -> str:
        return (
            f"SimulationResult(contributors={len(self.contributors)}, length={self.mean.shape[0]}, "
            f"total_weight={self.total_weight:g}, upload_bytes={self.upload_bytes}, "
            f"decrypt_request_bytes={self.decrypt_request_bytes})"
        )


def check_simulation_inputs(
    config: object,
    config_type: type[_RoundConfig],
    vectors: Sequence[np.ndarray],
    weights: Sequence[float] | None,
    identities: Sequence[NodeIdentity] | None,
) -> list[float]:
    """``simulate``'s arguments checked; returns the weights (default 1 each).

    Raises:
        TypeError / ValueError: a config of another type, no vector, or weights or
            identities that do not fit the vectors and the config.
    """
    if not isinstance(config, config_type):
        raise TypeError(f"config must be a {config_type.__name__}, got {type(config).__name__}")
    n = len(vectors)
    if n < 1:
        raise ValueError("need at least one vector")
    checked = [1.0] * n if weights is None else list(weights)
    if len(checked) != n:
        raise ValueError(f"got {len(checked)} weights for {n} vectors")
    if (identities is None) != (config.roster is None):
        raise ValueError("identities are given exactly when the config has a roster")
    if identities is not None and len(identities) != n:
        raise ValueError(f"got {len(identities)} identities for {n} vectors")
    return checked


def run_simulation(
    server: Any,
    clients: Sequence[Any],
    vectors: Sequence[np.ndarray],
    weights: Sequence[float],
    drops: Mapping[Any, frozenset[int]],
    *,
    encrypt: Any,
    decrypt: Any,
) -> SimulationResult:
    """Drive one round in process, every message through its bytes: node ``i`` is
    ``clients[i]``; a node listed under a stage in ``drops`` drops before it answers that
    stage's request and stays gone; ``encrypt`` is the stage at which nodes get their input
    and upload, ``decrypt`` the stage whose request size is reported.
    """
    busy = [0.0] * len(clients)
    server_time = 0.0
    stage_seconds: dict[str, float] = {}

    def server_call(stage: Any, fn: Any, *args: Any) -> Any:
        nonlocal server_time
        start = time.perf_counter()
        value = fn(*args)
        elapsed = time.perf_counter() - start
        server_time += elapsed
        stage_seconds[stage.name] = stage_seconds.get(stage.name, 0.0) + elapsed
        return value

    gone: set[int] = set()
    upload_bytes = decrypt_bytes = 0
    requests = server_call(server.stage, server.begin)
    while requests:
        stage = server.stage
        for node in sorted(requests):
            if node in gone or node in drops.get(stage, frozenset()):
                gone.add(node)
                continue
            data = requests[node].to_bytes()
            if stage is decrypt:
                decrypt_bytes = len(data)
            start = time.perf_counter()
            if stage is encrypt:
                clients[node].set_input(vectors[node], weights[node])
            reply = clients[node].handle(data).to_bytes()
            busy[node] += time.perf_counter() - start
            if stage is encrypt:
                upload_bytes = len(reply)
            server_call(stage, server.receive, reply)
        requests = server_call(stage, server.end_stage)
    result = server.result
    active = [b for b in busy if b > 0]
    return SimulationResult(
        mean=result.mean,
        total_weight=result.total_weight,
        contributors=result.contributors,
        result=result,
        report=server.report,
        upload_bytes=upload_bytes,
        decrypt_request_bytes=decrypt_bytes,
        client_seconds=float(np.mean(active)) if active else 0.0,
        server_seconds=server_time,
        stage_seconds=stage_seconds,
    )
