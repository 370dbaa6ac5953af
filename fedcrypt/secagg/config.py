"""SecAgg / SecAgg+ parameters and the public neighbour graph.

Invariants:

* A :class:`SecAggConfig` that constructs is safe to run: the fixed-point overflow guard
  holds for ``num_clients`` summands, the threshold lies within the bounds below, and the
  neighbour graph exists.
* The neighbour graph is a pure function of ``(num_clients, neighbours, graph_seed,
  round_id)``: every client and the server compute the same graph without trusting anyone
  to send it, so a malicious server cannot show different neighbourhoods to different
  clients.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from fedcrypt.vectors import FixedPointCodec

__all__ = ["SecAggConfig", "MAX_CLIENTS", "harary_graph"]

#: Shamir points are ``client_id + 1`` in 1..65535, so ids are 0..65533 (one spare).
MAX_CLIENTS = (1 << 16) - 2


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """Parameters of one SecAgg (Bonawitz et al. 2017) or SecAgg+ (Bell et al. 2020) round.

    Each client ``u`` has a *neighbourhood* ``N(u)``: every other client (``neighbours=None``,
    classic SecAgg, the complete graph) or its ``k`` neighbours on a k-regular Harary graph
    ``H(n, k)`` whose vertex labels are permuted by public randomness (SecAgg+, Bell et al.
    2020, Sec. 3). ``u`` masks its input with one pairwise mask per neighbour and secret-shares
    its two secrets among its ``m`` *share holders* ``N(u) + {u}`` (``m = k + 1``, or
    ``n`` for the complete graph) with Shamir threshold ``t``.

    Two threat models, named by ``verify_survivors`` (:attr:`threat_model`):

    * ``"malicious-server"`` (``verify_survivors=True``, the default wherever the clients
      have identities): clients sign their keys, the set of neighbours they masked with and
      the survivor set; a client reveals shares only with a consistency *quorum* and with
      every survivor's masking attestation in hand (see below). Secure against a server
      that deviates arbitrarily and colludes with up to ``max_colluders`` clients.
    * ``"honest-but-curious"`` (``verify_survivors=False``): secure only against a server
      that *follows the protocol* (and up to ``max_colluders`` colluding clients): it may
      look at everything it receives, but it must send every client the same, honest key
      directory, share bundle and unmask request. A server that deviates (forwards only
      some share ciphertexts to a victim, then names different peers as dropped and
      survived to different holders, or swaps keys) recovers a victim's input exactly;
      clients cannot detect it without signatures. Using this mode emits a
      :class:`~fedcrypt.errors.HonestButCuriousWarning`.

    Bounds checked here (``m`` share holders, ``t`` threshold, ``n`` clients, ``k`` degree,
    ``c = max_colluders``):

    * ``1 <= t <= m`` — some set of ``t`` holders exists;
    * ``2 t > m + c`` — the honest-majority bound of Bonawitz et al. (Sec. 4, Thm. 6.3) and
      Bell et al. (Sec. 3.2): an honest holder reveals, per peer, *either* the self-mask
      share *or* the key share, so a server that asks every holder consistently cannot
      collect ``t`` shares of both kinds for one client from ``m`` holders, ``c`` of them
      its own;
    * ``t >= c + 2`` — a survivor's masked input keeps at least ``t - 1 >= c + 1`` pairwise
      masks with other survivors, so at least one of them is with an honest survivor whose
      mask key is never reconstructed (``c < t`` colluding shares cannot rebuild it);
    * with ``verify_survivors``: the consistency quorum
      ``q = max(t, floor((n + c) / 2) + 1) <= n``. Two sets of ``q`` signers intersect in
      ``2q - n > c`` clients, so at least one honest client signed both, and an honest
      client signs one survivor set per round: no two survivor sets can both reach the
      quorum, even with ``c`` colluders signing anything. *Cost in dropouts*: the round
      completes only if at least ``q`` clients send a masked input and sign the survivor
      set, so at most ``n - q`` clients may drop in all (fewer than half, against the
      ``m - t`` per neighbourhood of the honest-but-curious mode).
    * SecAgg+ (``k < n - 1``): ``n * k`` even (a k-regular graph exists) and
      ``k >= ceil(log2 n)``: Bell et al. need ``k = Omega(log n)`` so that the graph with
      the dropped and corrupt clients removed stays connected with high probability; this
      is the order of their bound with constant 1, a floor rather than their exact
      statistical-security constant;
    * the fixed-point overflow guard ``n * (floor(clip*scale)+1) <= 2^(bits-1) - 1``
      (:class:`~fedcrypt.vectors.FixedPointCodec`), so the ring sum of every client never
      wraps.

    What the malicious-server mode guarantees (stated in full, with its proof, in
    SECURITY.md): for every honest client ``v`` whose masked input the server holds, the
    server cannot remove every mask of ``y_v``, whatever it sends to whom, provided
    signatures are unforgeable (EUF-CMA, Ed25519), shares are t-private (Shamir), the
    share channel is confidential and authenticated (X25519 + HKDF + AES-GCM under signed
    keys), and at most ``c`` clients collude. It may still learn the sum over a group of
    survivors joined by unrevealed pairwise masks (Bell et al.'s summation functionality),
    never one client's input alone.

    Args:
        num_clients: ``n``; client ids are ``0 .. n-1``.
        threshold: Shamir threshold ``t``.
        neighbours: SecAgg+ degree ``k``, or ``None`` for the complete graph.
        bits: ring size, 32 or 64.
        clip: L-infinity clipping bound of float inputs.
        scale: fixed-point scale, default the largest safe power of two.
        verify_survivors: the malicious-server mode (signed keys, masking attestations,
            consistency quorum); ``False`` is the honest-but-curious mode.
        rounding: fixed-point rounding, ``"stochastic"`` or ``"nearest"``.
        graph_seed: public randomness that permutes the Harary graph's labels (SecAgg+).
            Against a malicious server it must be fixed before the server sees the
            clients' keys (for example in the deployment's configuration), so the server
            cannot pick a graph that isolates a victim among colluders.
        max_colluders: ``c``, how many clients may collude with the server; the bounds
            above hold for it.

    Raises:
        ValueError: a bound above is broken; the message names it.
        OverflowRiskError: the overflow guard fails.
    """

    num_clients: int
    threshold: int
    neighbours: int | None = None
    bits: int = 32
    clip: float = 1.0
    scale: float | None = None
    verify_survivors: bool = False
    rounding: str = "stochastic"
    graph_seed: bytes = b""
    max_colluders: int = 0
    codec: FixedPointCodec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n, t, k = self.num_clients, self.threshold, self.neighbours
        if not _is_int(n) or not 2 <= n <= MAX_CLIENTS:
            raise ValueError(f"num_clients must be an integer in [2, {MAX_CLIENTS}], got {n!r}")
        if k is not None:
            if not _is_int(k) or not 1 <= k <= n - 1:
                raise ValueError(f"neighbours must be None or an integer in [1, num_clients-1={n - 1}], got {k!r}")
            if k < n - 1:
                if (n * k) % 2:
                    raise ValueError(f"no {k}-regular graph on {n} vertices: num_clients * neighbours must be even")
                floor = math.ceil(math.log2(n))
                if k < floor:
                    raise ValueError(f"SecAgg+ needs neighbours >= ceil(log2(num_clients)) = {floor} (Bell et al. 2020: k = Omega(log n)), got {k}")
        holders = self.share_holders
        c = self.max_colluders
        if not _is_int(c) or not 0 <= c < n - 1:
            raise ValueError(f"max_colluders must be an integer in [0, num_clients-2={n - 2}], got {c!r}")
        if not _is_int(t) or not 1 <= t <= holders:
            raise ValueError(f"threshold must be an integer in [1, share holders={holders}], got {t!r}")
        if 2 * t <= holders + c:
            raise ValueError(
                f"threshold must exceed half of the {holders} share holders plus max_colluders={c} "
                f"(2*threshold > {holders + c}), got {t}: a lower threshold lets a server recover both shares "
                f"of one client"
            )
        if t < c + 2:
            raise ValueError(
                f"threshold must be at least max_colluders + 2 = {c + 2}, got {t}: a survivor must keep "
                f"a pairwise mask with at least one honest survivor"
            )
        if self.bits not in (32, 64):
            raise ValueError(f"bits must be 32 or 64, got {self.bits!r}")
        if not isinstance(self.verify_survivors, bool):
            raise TypeError(f"verify_survivors must be a bool, got {type(self.verify_survivors).__name__}")
        if self.verify_survivors and self.consistency_quorum > n:
            raise ValueError(f"the consistency quorum {self.consistency_quorum} exceeds num_clients={n}")
        if not isinstance(self.graph_seed, bytes) or len(self.graph_seed) > 64:
            raise ValueError(f"graph_seed must be bytes, at most 64 of them, got {type(self.graph_seed).__name__}")
        codec = FixedPointCodec(
            clip=self.clip,
            bits=self.bits,
            num_clients=n,
            scale=self.scale,
            rounding=self.rounding,  # type: ignore[arg-type]
        )
        object.__setattr__(self, "codec", codec)

    @property
    def threat_model(self) -> str:
        """``"malicious-server"`` with ``verify_survivors``, else ``"honest-but-curious"``."""
        return "malicious-server" if self.verify_survivors else "honest-but-curious"

    @property
    def consistency_quorum(self) -> int:
        """``q = max(t, floor((n + c) / 2) + 1)``: signatures a client needs on the survivor set.

        No two disjoint groups of honest clients can both reach it (any two quorums share
        more than ``c`` clients), so every honest client that unmasks saw the same set.
        """
        return max(self.threshold, (self.num_clients + self.max_colluders) // 2 + 1)

    @property
    def degree(self) -> int:
        """Number of pairwise masks per client (``n - 1`` for the complete graph)."""
        if self.neighbours is None:
            return self.num_clients - 1
        return self.neighbours

    @property
    def complete_graph(self) -> bool:
        """True for classic SecAgg (every pair of clients shares a mask)."""
        return self.degree == self.num_clients - 1

    @property
    def share_holders(self) -> int:
        """``m``: how many clients hold shares of one client's secrets (itself included)."""
        return self.degree + 1

    def neighbourhood(self, client_id: int, round_id: int) -> frozenset[int]:
        """``N(u)``: the clients ``client_id`` shares pairwise masks with (itself excluded)."""
        if not _is_int(client_id) or not 0 <= client_id < self.num_clients:
            raise ValueError(f"client_id must be in [0, {self.num_clients}), got {client_id!r}")
        if self.complete_graph:
            return frozenset(range(self.num_clients)) - {client_id}
        return harary_graph(self.num_clients, self.degree, self.graph_seed, int(round_id))[client_id]

    def holders(self, client_id: int, round_id: int) -> frozenset[int]:
        """``N(u) + {u}``: the clients that receive shares of ``client_id``'s secrets."""
        return self.neighbourhood(client_id, round_id) | {client_id}

    def to_bytes(self) -> bytes:
        """Canonical encoding, bound into every client's signed context."""
        return b"".join(
            [
                b"fedcrypt/secagg-config/v2",
                struct.pack(
                    ">IIIB?I",
                    self.num_clients,
                    self.threshold,
                    self.degree,
                    self.bits,
                    self.verify_survivors,
                    self.max_colluders,
                ),
                struct.pack(">dd", self.codec.clip, self.codec.scale),
                struct.pack(">B", len(self.rounding)),
                self.rounding.encode(),
                struct.pack(">B", len(self.graph_seed)),
                self.graph_seed,
            ]
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@lru_cache(maxsize=8)
def harary_graph(num_clients: int, degree: int, graph_seed: bytes, round_id: int) -> tuple[frozenset[int], ...]:
    """The k-regular Harary graph ``H(n, k)`` with vertex labels permuted by public randomness.

    Vertex ``i`` of ``H(n, k)`` is joined to ``i +- 1 .. i +- floor(k/2)`` (mod n) and, for odd
    ``k`` (then ``n`` is even), to ``i + n/2``. The permutation is a Fisher-Yates shuffle
    driven by SHAKE-256 of ``(graph_seed, n, k, round)`` with rejection sampling, so it is
    uniform and identical for every party. It is public, not secret.

    Returns:
        ``neighbours[u]`` for each client id ``u``.
    """
    n, k = num_clients, degree
    if not (_is_int(n) and _is_int(k) and 1 <= k <= n - 1 and (n * k) % 2 == 0):
        raise ValueError(f"no {degree}-regular graph on {num_clients} vertices (need 1 <= k <= n-1 and n*k even)")
    stream = hashlib.shake_256(b"fedcrypt/secagg-graph/v1" + struct.pack(">IIQB", n, k, round_id, len(graph_seed)) + graph_seed).digest(
        8 * n + 64 * 8
    )
    position = 0

    def below(bound: int) -> int:
        nonlocal position, stream
        limit = (1 << 64) - ((1 << 64) % bound)
        while True:
            if position + 8 > len(stream):
                stream = hashlib.shake_256(stream).digest(8 * n + 64 * 8)
                position = 0
            value = int.from_bytes(stream[position : position + 8], "big")
            position += 8
            if value < limit:
                return value % bound

    label = list(range(n))
    for i in range(n - 1, 0, -1):
        j = below(i + 1)
        label[i], label[j] = label[j], label[i]
    adjacency: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        offsets = list(range(1, k // 2 + 1))
        if k % 2:
            offsets.append(n // 2)
        for off in offsets:
            a, b = label[i], label[(i + off) % n]
            adjacency[a].add(b)
            adjacency[b].add(a)
    return tuple(frozenset(s) for s in adjacency)
