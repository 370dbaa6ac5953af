"""SecAgg / SecAgg+ over FLARE's Collab API: a transport over :mod:`fedcrypt.secagg` and its set-up
rules (:mod:`fedcrypt.secagg.setup`). Each stage of a :class:`~fedcrypt.secagg.ServerProtocol` is
one call of every site's :meth:`SecAggClient.fedcrypt_secagg`; the site keeps its
:class:`~fedcrypt.secagg.ClientProtocol` in memory (a FLARE client job lives for the whole job)
and at MASKED_INPUT trains and uploads only the masked ``w/M * [x, metrics, 1]`` (with
distributed DP, the noised delta). Requests: ``stage``, ``round``, ``payload`` (+ ``config``,
``sites``, ``client-id``, ``max-weight``, ``dp``, ``model`` digest at ADVERTISE_KEYS; +
``arrays`` at MASKED_INPUT); replies: ``payload`` (+ ``spec``, ``metrics``). Every party binds
job, round, sites, DP settings, model digest and max-weight (:func:`~fedcrypt.secagg.setup.round_binding`)."""

from __future__ import annotations

import hmac
import os
import secrets
import warnings
from functools import partial
from typing import Any, Literal

import numpy as np

from fedcrypt.dp.distributed import DistributedDpConfig
from fedcrypt.errors import HonestButCuriousWarning, MalformedMessageError, ProtocolViolationError, RoundAbortedError
from fedcrypt.errors import SpecMismatchError, UnexpectedMessageError
from fedcrypt.identity import NodeIdentity, Roster, load_credentials
from fedcrypt.secagg import ClientProtocol, SecAggConfig, ServerProtocol, Stage, decode_message
from fedcrypt.secagg.membership import pack_members, round_keys, unpack_members
from fedcrypt.secagg.messages import MaskedInput, ShareBundle
from fedcrypt.secagg.setup import check_join, config_for, dp_from_bytes, dp_to_bytes, dump_config, load_config
from fedcrypt.secagg.setup import round_binding, weight_bytes
from fedcrypt.vectors import TensorSpec

from ._common import Model, RoundReport, RoundsServer, TrainingClient, check_model, check_number, collab, exchange, fields, site_floor
from ._common import flat, job_run_id, log, model_digest, reply_layout, take, unflat

__all__ = ["SecAggServer", "SecAggClient", "METHOD"]

#: The published site method every stage calls.
METHOD = "fedcrypt_secagg"
_SETUP = frozenset({"stage", "round", "payload", "config", "sites", "client-id", "max-weight", "dp", "model"})
_STAGE, _TRAIN = frozenset({"stage", "round", "payload"}), frozenset({"stage", "round", "payload", "arrays"})


class SecAggServer(RoundsServer):
    """The server of fedcrypt SecAgg / SecAgg+ as a Collab server object (:class:`~._common.RoundsServer`).
    Math and threat model: :class:`~fedcrypt.secagg.ServerProtocol`'s (Bonawitz et al. 2017; Bell
    et al. 2020): it learns ``sum_{u in survivors} w_u/M * [x_u, metrics_u, 1]`` only.

    Args:
        initial_model: ``"package.module:function"`` returning the initial model (a dict of arrays).
        num_rounds: FedAvg rounds, each one SecAgg round over every connected site.
        threshold, neighbours, bits, clip, rounding, max_colluders: the round's config
            (:func:`~fedcrypt.secagg.setup.config_for`).
        max_weight: ``M``, the largest FedAvg weight a site may claim.
        stage_timeout, train_timeout: seconds a site has to answer a stage, and MASKED_INPUT.
        dp_noise_multiplier: distributed DP (Kairouz et al. 2021) with ``dp_clip``, ``dp_bits``,
            ``dp_mechanism``; needs ``bits=32``; the server gets ``model + noisy mean delta``.
        roster: a :class:`~fedcrypt.identity.Roster` file whose names are FLARE site names: the rounds
            run the malicious-server mode (``verify_survivors``, signed adverts) over the sites it names.
    """

    def __init__(
        self, initial_model: str, num_rounds: int = 2, threshold: float = 0.67, neighbours: int | None = None,
        bits: int = 32, clip: float = 4.0, max_weight: float = 1000.0, rounding: str = "stochastic",
        max_colluders: int = 0, stage_timeout: float = 60.0, train_timeout: float | None = None, roster: str | None = None,
        dp_noise_multiplier: float | None = None, dp_clip: float = 1.0, dp_bits: int = 20, dp_mechanism: Literal["ddgauss", "skellam"] = "ddgauss",
    ) -> None:
        self._settings(initial_model, num_rounds, max_weight, stage_timeout, train_timeout)
        check_number("max_colluders", max_colluders, minimum=0)
        check_number("neighbours", neighbours, minimum=0, optional=True)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.5 < threshold <= 1.0:
            raise ValueError(f"threshold must be a fraction in (0.5, 1], got {threshold!r}")
        SecAggConfig(num_clients=2, threshold=2, bits=bits, clip=clip, rounding=rounding)  # fail now, not in round 1
        if dp_noise_multiplier is not None:
            DistributedDpConfig(dp_noise_multiplier, dp_clip, 2, bits=dp_bits, mechanism=dp_mechanism)
            if bits != 32:
                raise ValueError(f"distributed DP needs bits=32 (the DP ring divides 2^32), got {bits}")
        self.threshold, self.neighbours, self.bits, self.clip, self.rounding = threshold, neighbours, bits, clip, rounding
        self.roster, self._roster = roster, None if roster is None else Roster.load(roster)
        self.max_colluders, self.dp_noise_multiplier, self.dp_clip = max_colluders, dp_noise_multiplier, dp_clip
        self.dp_bits, self.dp_mechanism = dp_bits, dp_mechanism

    def _round(self, model: Model, sites: list[str], round_id: int, run_id: int, report: RoundReport) -> Model:
        if self._roster is not None:  # the round's members: the sites the roster names (their FLARE names)
            sites = report.nodes = [site for site in sites if site in self._roster]
        config = config_for(len(sites), threshold=self.threshold, neighbours=self.neighbours, bits=self.bits, clip=self.clip,
                            rounding=self.rounding, max_colluders=self.max_colluders, roster=self._roster, round_id=round_id, members=sites)
        dp_bytes = b""  # with DP: a public rotation seed, fresh per round
        if self.dp_noise_multiplier is not None:
            dp_bytes = dp_to_bytes(self.dp_noise_multiplier, self.dp_clip, self.dp_bits, self.dp_mechanism, secrets.token_bytes(32))
        digest, sites_bytes = model_digest(model), pack_members(sites)
        bound = (sites_bytes, dp_bytes, digest, weight_bytes(self.max_weight))  # every setup field but client-id
        keys = None if self._roster is None else self._roster.verify_keys(sites)  # the core refuses a bad signature
        server = ServerProtocol(config, round_id=round_id, associated_data=round_binding(run_id, round_id, *bound), verify_keys=keys)
        setup = {"stage": Stage.ADVERTISE_KEYS.name, "round": round_id, "payload": b"", "config": dump_config(config),
                 "sites": sites_bytes, "max-weight": float(self.max_weight), "dp": dp_bytes, "model": digest}
        requests: dict[str, dict[str, Any]] = {site: {**setup, "client-id": cid} for cid, site in enumerate(sites)}
        layouts: dict[int, tuple[bytes, bytes]] = {}  # by client: the core keeps the most common layout
        while server.stage not in (Stage.DONE, Stage.ABORTED):
            stage, masked = server.stage, server.stage is Stage.MASKED_INPUT
            for request in requests.values() if masked else ():
                request["arrays"] = model
            exchange(METHOD, requests, timeout=(self.train_timeout or self.stage_timeout) if masked else self.stage_timeout,
                     accept=partial(self._accept, server, sites, layouts, dp_bytes), report=report, stage=stage.name)
            outgoing = server.end_stage()
            requests = {sites[cid]: {"stage": server.stage.name, "round": round_id, "payload": m.to_bytes()}
                        for cid, m in outgoing.items()}
        result, count, layout = server.result, len(server.result.survivors), layouts[server.result.survivors[0]]
        report.survivors = [sites[cid] for cid in result.survivors]
        report.refused.update({sites[c]: "SpecMismatchError: its layout is not the one most sites' inputs carry" for c in server.excluded})
        if dp_bytes:
            spec = TensorSpec.from_bytes(layout[0])
            dp = dp_from_bytes(dp_bytes, config.num_clients, spec.size)
            report.weight, report.dp = float(count), {"mechanism": dp.config.mechanism, "noise_multiplier": dp.config.noise_multiplier,
                                                      "clip": dp.config.clip, "noise_stddev": dp.noise_stddev(count) / count}
            return spec.unflatten((spec.flatten(model) + dp.decode(result.ring_sum, count) / count).astype(np.float32))
        total = config.codec.decode_sum(result.ring_sum, count)
        if not total[-1] > 0:
            raise RoundAbortedError("the survivors' total weight decoded to zero", party="server", round=round_id)
        report.weight = float(total[-1]) * self.max_weight
        return unflat(layout, total[:-1] / total[-1], report)

    @staticmethod
    def _accept(server: ServerProtocol, sites: list[str], layouts: dict[int, tuple[bytes, bytes]], dp_bytes: bytes, site: str,
                reply: Any) -> None:
        """Feed one site's reply to the protocol (at MASKED_INPUT labelled with its layout: the core keeps the most common one)."""
        where, cid, masked = f"reply of site {site}", sites.index(site), server.stage is Stage.MASKED_INPUT
        payload = take(fields(reply, frozenset({"payload", "spec", "metrics"} if masked else {"payload"}), where), "payload", bytes, where)
        if not masked:
            message = decode_message(payload)
        else:
            layout, length = reply_layout(reply, [], where)
            layouts[cid] = layout
            dp = dp_from_bytes(dp_bytes, server.config.num_clients, TensorSpec.from_bytes(layout[0]).size)
            message = MaskedInput.from_bytes(payload, expected_length=dp.ring_length if dp else length + 1)
        if message.party != cid:
            raise UnexpectedMessageError(f"{where} claims to be client {message.party}", party=cid, stage=server.stage)
        server.receive(message, group=len(layout[0]).to_bytes(4, "big") + layout[0] + layout[1] if masked else b"")


class SecAggClient(TrainingClient):
    """A site of fedcrypt SecAgg / SecAgg+ as a Collab client object (:class:`~._common.TrainingClient`).
    Math and threat model: :class:`~fedcrypt.secagg.ClientProtocol`'s; it joins under
    :func:`~fedcrypt.secagg.setup.check_join` and :func:`~fedcrypt.secagg.membership.round_keys`,
    and trains only on the model the round was set up with.

    Args:
        train: ``"package.module:function"``, the local update (or override :meth:`fit`).
        min_clients, max_colluders, min_noise_multiplier: refuse rounds with fewer sites, declaring fewer colluders, or without
            distributed DP of this noise; each the stricter of the argument and ``FEDCRYPT_<NAME>`` in the site's environment.
        identity, roster, roster_digest: the site's identity key file, roster file and its SHA-256 (hex), ``{site}``
            standing for its name; ``FEDCRYPT_IDENTITY``, ``FEDCRYPT_ROSTER``, ``FEDCRYPT_ROSTER_DIGEST`` in the site's
            environment first (the job's submitter sets the arguments). Then it joins only malicious-server rounds.
    """

    def __init__(self, train: str | None = None, min_clients: int = 2, max_colluders: int = 0,
                 min_noise_multiplier: float | None = None, identity: str | None = None, roster: str | None = None,
                 roster_digest: str | None = None) -> None:
        check_number("min_clients", min_clients, minimum=2)
        check_number("max_colluders", max_colluders, minimum=0)
        check_number("min_noise_multiplier", min_noise_multiplier, optional=True)
        self.train, self.min_clients, self.max_colluders, self.min_noise_multiplier = train, min_clients, max_colluders, min_noise_multiplier
        self.identity, self.roster, self.roster_digest = identity, roster, roster_digest
        self._credentials: tuple[Roster | None, NodeIdentity | None] | None = None  # (roster, identity) once loaded
        self._kept: tuple[ClientProtocol, float, bytes, bytes] | None = None  # client, max weight, model digest, dp
        self._joined: int | None = None

    @collab.publish
    def fedcrypt_secagg(self, request: dict) -> dict:
        """Answer one stage of the server's round."""
        where = f"server request to site {(site := collab.site_name)}"
        if not isinstance(request, dict) or not isinstance(request.get("stage"), str) or request["stage"] not in Stage.__members__:
            raise MalformedMessageError(f"{where}: not a request of a known stage", party=site)
        stage = Stage[request["stage"]]
        if stage is Stage.ADVERTISE_KEYS:
            return self._setup(fields(request, _SETUP, where), site, where)
        if self._kept is None:
            raise UnexpectedMessageError(f"a {stage.name} request before this site joined a round", party=site, stage=stage)
        client, max_weight, digest, dp_bytes = self._kept
        fields(request, _TRAIN if stage is Stage.MASKED_INPUT else _STAGE, where)
        if take(request, "round", int, where) != client.round_id or client.stage is not stage:
            raise UnexpectedMessageError(f"{where}: not the request this site expects", party=site, stage=client.stage)
        message, reply = decode_message(take(request, "payload", bytes, where)), {}
        if stage is Stage.MASKED_INPUT:
            model = check_model(request["arrays"], where)
            if not isinstance(message, ShareBundle) or not hmac.compare_digest(model_digest(model), digest):
                raise ProtocolViolationError(f"{where}: not a share bundle with the model the round was set up with "
                                             "(a server may not send different models to different sites)", party=site)
            params, weight, metrics = self.update(model, client.round_id, max_weight, where)
            dp = dp_from_bytes(dp_bytes, client.config.num_clients, TensorSpec.from_tensors(params).size)
            values, (reply["spec"], reply["metrics"]) = flat(params, {} if dp else metrics)
            if dp is None:
                client.set_input(vector := np.append(values, 1.0) * (weight / max_weight))  # w/M [x, metrics, 1]
                log.info("fedcrypt secagg %s round %s: %s (own input, never sent)", site, client.round_id, client.config.codec.clip_report(vector))
            elif TensorSpec.from_tensors(model).digest() != TensorSpec.from_bytes(reply["spec"]).digest():
                raise SpecMismatchError(f"{where}: the trained model's layout differs from the global model's")
            else:  # distributed DP: the update delta, clipped, noised, in the ring
                client.set_input(dp.encode(values - flat(model, {})[0]).astype(client.config.codec.ring_dtype))
        reply["payload"] = client.handle(message).to_bytes()
        if client.stage in (Stage.DONE, Stage.ABORTED):
            self._kept = None
        return reply

    def _setup(self, request: dict[str, Any], site: str, where: str) -> dict[str, bytes]:
        config = load_config(take(request, "config", bytes, where))
        sites_bytes, dp_bytes, digest = (take(request, name, bytes, where) for name in ("sites", "dp", "model"))
        client_id, round_id = take(request, "client-id", int, where), take(request, "round", int, where)
        max_weight, sites = take(request, "max-weight", float, where), unpack_members(sites_bytes)
        if not (np.isfinite(max_weight) and max_weight > 0) or len(digest) != 32 or list(sites) != sorted(set(sites)):
            raise MalformedMessageError(f"{where}: max-weight, model digest or site list out of range", party=site)
        low = [site_floor(n, getattr(self, n), integer="noise" not in n) for n in ("min_clients", "max_colluders", "min_noise_multiplier")]
        check_join(config, nodes=sites, client_id=client_id, node=site, round_id=round_id, last_round=self._joined,
                   min_clients=int(low[0] or 0), dp=dp_from_bytes(dp_bytes, config.num_clients), min_noise_multiplier=low[2])
        if self._credentials is None:  # (roster, identity), or (None, None); the site's environment first
            paths = {"IDENTITY": self.identity, "ROSTER": self.roster, "ROSTER_DIGEST": self.roster_digest}
            self._credentials = load_credentials(*(os.environ.get(f"FEDCRYPT_{k}") or (v and v.replace("{site}", site)) for k, v in paths.items()))
        keys = round_keys(config, client_id, sites, *self._credentials, required_colluders=int(low[1] or 0), round_id=round_id)
        if self._joined is None and self._credentials[0] is None:
            log.warning("fedcrypt secagg: site %s has no roster: it joins honest-but-curious rounds only", site)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once above
            client = ClientProtocol(config, client_id, round_id=round_id, signing_key=keys[0], verify_keys=keys[1],
                                    associated_data=round_binding(job_run_id(), round_id, sites_bytes, dp_bytes, digest,
                                                                  weight_bytes(max_weight)))  # the server's binding
        advert = client.advertise()
        self._kept, self._joined = (client, max_weight, digest, dp_bytes), round_id
        return {"payload": advert.to_bytes()}
