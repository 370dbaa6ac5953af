"""SecAgg / SecAgg+ for NVIDIA FLARE's Collab API: a transport over :mod:`fedcrypt.secagg`,
whose round set-up rules are :mod:`fedcrypt.secagg.setup`'s.

:class:`SecAggServer` is the server object (its ``@collab.main`` runs the rounds): each
stage of a :class:`~fedcrypt.secagg.ServerProtocol` is one call of every site's
:meth:`SecAggClient.fedcrypt_secagg`, replies fed to the protocol as they arrive, sites
that fail or time out dropped by ``end_stage``. :class:`SecAggClient` keeps the site's
:class:`~fedcrypt.secagg.ClientProtocol` in memory (the FLARE client job lives for the whole
job) and at MASKED_INPUT runs the user's train function on the global model and uploads only
the masked ``w/M * [x, metrics, 1]`` (with distributed DP, the noised update delta).

Requests (dicts; ``payload``: a protocol message's bytes)::

    ADVERTISE_KEYS  stage, round, payload, config, sites, client-id, max-weight, dp, model
    MASKED_INPUT    stage, round, payload, arrays (the global model)
    other stages    stage, round, payload
    replies         payload (+ spec, metrics at MASKED_INPUT)

Every party binds the job, the round, the site list, the DP settings and the model's digest
(:func:`~fedcrypt.secagg.setup.round_binding`), so a site shown another setup or model fails
the round. Without a roster the round is honest-but-curious.
"""

from __future__ import annotations

import hmac
import secrets
import warnings
from functools import partial
from typing import Any

import numpy as np

from fedcrypt.dp.distributed import DistributedDpConfig
from fedcrypt.errors import FedcryptError, HonestButCuriousWarning, MalformedMessageError, ProtocolViolationError
from fedcrypt.errors import RoundAbortedError, SpecMismatchError, UnexpectedMessageError
from fedcrypt.secagg import ClientProtocol, SecAggConfig, ServerProtocol, Stage, decode_message
from fedcrypt.secagg.membership import pack_members, round_keys, unpack_members
from fedcrypt.secagg.messages import MaskedInput, ShareBundle
from fedcrypt.secagg.setup import check_join, config_for, dp_from_bytes, dp_to_bytes, dump_config, load_config
from fedcrypt.secagg.setup import round_binding
from fedcrypt.vectors import TensorSpec

from ._common import RoundReport, check_model, check_number, collab, exchange, fields, job_run_id, load, log, model_digest
from ._common import save, take, train_reply

__all__ = ["SecAggServer", "SecAggClient", "METHOD"]

#: The published client method every stage calls.
METHOD = "fedcrypt_secagg"
_SETUP = frozenset({"stage", "round", "payload", "config", "sites", "client-id", "max-weight", "dp", "model"})
_STAGE, _TRAIN = frozenset({"stage", "round", "payload"}), frozenset({"stage", "round", "payload", "arrays"})


class SecAggServer:
    """The server side of fedcrypt SecAgg / SecAgg+ as a Collab server object.

    Math and threat model: those of :class:`~fedcrypt.secagg.ServerProtocol` (Bonawitz et al.
    2017; SecAgg+ graphs of Bell et al. 2020): the server learns
    ``sum_{u in survivors} w_u/M * [x_u, metrics_u, 1]`` only, and from it the weighted
    average. The config is :func:`~fedcrypt.secagg.setup.config_for`'s.

    Args:
        initial_model: ``"package.module:function"`` returning the initial model (a dict of
            numpy arrays), imported on the server.
        num_rounds: FedAvg rounds; each is one SecAgg round over every connected site.
        threshold, neighbours, bits, clip, rounding, max_colluders: the round's config
            (:func:`~fedcrypt.secagg.setup.config_for`).
        max_weight: ``M``, the largest FedAvg weight a site may claim.
        stage_timeout: seconds a site has to answer one stage; train_timeout: at MASKED_INPUT
            (default ``stage_timeout``).
        dp_noise_multiplier: switches on distributed DP (Kairouz et al. 2021), with
            ``dp_clip``, ``dp_bits``, ``dp_mechanism``; needs ``bits=32``.

    After the last round the final model and the reports are written to the server's run
    directory (:data:`~._common.MODEL_FILE`, :data:`~._common.REPORT_FILE`) and kept in
    :attr:`model` and :attr:`reports`.
    """

    def __init__(
        self, initial_model: str, num_rounds: int = 2, threshold: float = 0.67, neighbours: int | None = None,
        bits: int = 32, clip: float = 4.0, max_weight: float = 1000.0, rounding: str = "stochastic",
        max_colluders: int = 0, stage_timeout: float = 60.0, train_timeout: float | None = None,
        dp_noise_multiplier: float | None = None, dp_clip: float = 1.0, dp_bits: int = 20, dp_mechanism: str = "ddgauss",
    ) -> None:
        if not isinstance(initial_model, str):
            raise TypeError("initial_model names a function: 'package.module:function'")
        check_number("num_rounds", num_rounds, minimum=1)
        check_number("max_colluders", max_colluders, minimum=0)
        check_number("neighbours", neighbours, minimum=0, optional=True)
        check_number("max_weight", max_weight)
        check_number("stage_timeout", stage_timeout)
        check_number("train_timeout", train_timeout, optional=True)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.5 < threshold <= 1.0:
            raise ValueError(f"threshold must be a fraction in (0.5, 1], got {threshold!r}")
        SecAggConfig(num_clients=2, threshold=2, bits=bits, clip=clip, rounding=rounding)  # fail now, not in round 1
        if dp_noise_multiplier is not None:
            DistributedDpConfig(dp_noise_multiplier, dp_clip, 2, bits=dp_bits, mechanism=dp_mechanism)  # type: ignore[arg-type]
            if bits != 32:
                raise ValueError(f"distributed DP needs bits=32 (the DP ring divides 2^32), got {bits}")
        # FLARE exports a component's constructor arguments from attributes of the same names
        self.initial_model, self.num_rounds, self.threshold, self.neighbours = initial_model, num_rounds, threshold, neighbours
        self.bits, self.clip, self.max_weight, self.rounding = bits, clip, max_weight, rounding
        self.max_colluders, self.stage_timeout, self.train_timeout = max_colluders, stage_timeout, train_timeout
        self.dp_noise_multiplier, self.dp_clip, self.dp_bits, self.dp_mechanism = dp_noise_multiplier, dp_clip, dp_bits, dp_mechanism
        self.model: dict[str, np.ndarray] | None = None
        self.reports: list[RoundReport] = []

    @collab.main
    def run(self) -> list[dict[str, Any]]:
        """Run the rounds over every connected site; save and return the reports."""
        model = check_model(load(self.initial_model)(), "initial_model")
        sites, run_id = sorted(proxy.name for proxy in collab.clients), job_run_id()
        log.warning("fedcrypt secagg: no roster: the round runs honest-but-curious (sites trust the server to relay keys)")
        for round_id in range(1, self.num_rounds + 1):
            report = RoundReport(round_id, list(sites))
            self.reports.append(report)
            try:
                model = self._round(model, sites, round_id, run_id, report)
            except (FedcryptError, ValueError) as exc:  # the round cannot finish: the model stays
                report.aborted = f"{type(exc).__name__}: {exc}"
                log.warning("fedcrypt secagg round %d aborted: %s", round_id, report.aborted)
        self.model = model
        save(model, self.reports)
        return [r.__dict__ for r in self.reports]

    def _round(self, model: dict[str, np.ndarray], sites: list[str], round_id: int, run_id: int,
               report: RoundReport) -> dict[str, np.ndarray]:
        config = config_for(len(sites), threshold=self.threshold, neighbours=self.neighbours, bits=self.bits, clip=self.clip,
                            rounding=self.rounding, max_colluders=self.max_colluders)
        dp_bytes = b""  # with DP: a public rotation seed, fresh per round
        if self.dp_noise_multiplier is not None:
            dp_bytes = dp_to_bytes(self.dp_noise_multiplier, self.dp_clip, self.dp_bits, self.dp_mechanism, secrets.token_bytes(32))
        digest, sites_bytes = model_digest(model), pack_members(sites)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once at start-up
            server = ServerProtocol(config, round_id=round_id, associated_data=round_binding(run_id, round_id, sites_bytes + dp_bytes + digest))
        setup = {"stage": Stage.ADVERTISE_KEYS.name, "round": round_id, "payload": b"", "config": dump_config(config),
                 "sites": sites_bytes, "max-weight": float(self.max_weight), "dp": dp_bytes, "model": digest}
        requests: dict[str, dict[str, Any]] = {site: {**setup, "client-id": cid} for cid, site in enumerate(sites)}
        layouts: list[tuple[bytes, bytes]] = []
        while server.stage not in (Stage.DONE, Stage.ABORTED):
            stage, masked = server.stage, server.stage is Stage.MASKED_INPUT
            if masked:
                for request in requests.values():
                    request["arrays"] = model
            timeout = (self.train_timeout or self.stage_timeout) if masked else self.stage_timeout
            exchange(METHOD, requests, timeout=timeout, accept=partial(self._accept, server, sites, stage, layouts, dp_bytes),
                     report=report, stage=stage.name)
            outgoing = server.end_stage()
            requests = {sites[cid]: {"stage": server.stage.name, "round": round_id, "payload": m.to_bytes()}
                        for cid, m in outgoing.items()}
        result = server.result
        report.survivors = [sites[cid] for cid in result.survivors]
        spec, names = TensorSpec.from_bytes(layouts[0][0]), unpack_members(layouts[0][1])
        count = len(result.survivors)
        if dp_bytes:
            dp = dp_from_bytes(dp_bytes, config.num_clients, spec.size)
            new = spec.flatten(model).astype(np.float64) + dp.decode(result.ring_sum, count) / count
            report.weight = float(count)
            report.dp = {"mechanism": dp.config.mechanism, "noise_multiplier": dp.config.noise_multiplier,
                         "clip": dp.config.clip, "survivors": count, "noise_stddev": dp.noise_stddev(count) / count}
            return spec.unflatten(new.astype(np.float32))
        total = config.codec.decode_sum(result.ring_sum, count)
        if not total[-1] > 0:
            raise RoundAbortedError("the survivors' total weight decoded to zero", party="server", round=round_id)
        average = total[:-1] / total[-1]
        report.weight = float(total[-1]) * self.max_weight
        report.metrics = {name: float(v) for name, v in zip(names, average[spec.size:])}
        return spec.unflatten(average[: spec.size].astype(np.float32))

    @staticmethod
    def _accept(server: ServerProtocol, sites: list[str], stage: Stage, layouts: list[tuple[bytes, bytes]], dp_bytes: bytes,
                site: str, reply: Any) -> None:
        """Feed one site's reply to the protocol (at MASKED_INPUT its layout must be the others')."""
        where, cid = f"reply of site {site}", sites.index(site)
        reply = fields(reply, frozenset({"payload", "spec", "metrics"}) if stage is Stage.MASKED_INPUT else frozenset({"payload"}), where)
        payload = take(reply, "payload", bytes, where)
        if stage is Stage.MASKED_INPUT:
            layout = (take(reply, "spec", bytes, where), take(reply, "metrics", bytes, where))
            if layouts and layout != layouts[0]:
                raise UnexpectedMessageError(f"{where}: its model layout differs from the other sites'", party=cid, stage=stage)
            spec, names = TensorSpec.from_bytes(layout[0]), unpack_members(layout[1])
            dp = dp_from_bytes(dp_bytes, server.config.num_clients, spec.size)
            message = MaskedInput.from_bytes(payload, expected_length=dp.ring_length if dp else spec.size + len(names) + 1)
        else:
            message = decode_message(payload)
        if message.party != cid:
            raise UnexpectedMessageError(f"{where} claims to be client {message.party}", party=cid, stage=stage)
        server.receive(message)
        if stage is Stage.MASKED_INPUT and not layouts:
            layouts.append(layout)


class SecAggClient:
    """The site side of fedcrypt SecAgg / SecAgg+ as a Collab client object.

    Math and threat model: those of :class:`~fedcrypt.secagg.ClientProtocol`; the site joins
    a round under :func:`~fedcrypt.secagg.setup.check_join` and
    :func:`~fedcrypt.secagg.membership.round_keys`, the round's associated data recomputed
    locally, and trains only on the model whose digest the round was set up with.

    Args:
        train: ``"package.module:function"``: ``function(model, info)`` gets the global model
            (a dict of numpy arrays) and ``{"round", "site"}``, and returns ``(params, weight)``
            or ``(params, weight, metrics)``. Or subclass and override :meth:`fit`.
        min_clients: refuse rounds with fewer sites.
        max_colluders: the colluding sites this site assumes (rounds declaring fewer are refused).
        min_noise_multiplier: refuse rounds without distributed DP of at least this noise.
    """

    def __init__(self, train: str | None = None, min_clients: int = 2, max_colluders: int = 0,
                 min_noise_multiplier: float | None = None) -> None:
        check_number("min_clients", min_clients, minimum=2)
        check_number("max_colluders", max_colluders, minimum=0)
        check_number("min_noise_multiplier", min_noise_multiplier, optional=True)
        self.train, self.min_clients, self.max_colluders = train, min_clients, max_colluders
        self.min_noise_multiplier = min_noise_multiplier
        self._kept: tuple[ClientProtocol, float, bytes, bytes] | None = None  # client, max weight, model digest, dp
        self._joined: int | None = None

    def fit(self, model: dict[str, np.ndarray], info: dict[str, Any]) -> tuple:
        """The local update: the ``train`` function's (override to train here instead)."""
        if self.train is None:
            raise TypeError("SecAggClient needs train='package.module:function' or a subclass overriding fit()")
        return load(self.train)(model, info)

    @collab.publish
    def fedcrypt_secagg(self, request: dict) -> dict:
        """Answer one stage of the server's round."""
        site = collab.site_name
        where = f"server request to site {site}"
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
            raise UnexpectedMessageError(f"{where}: not the request this site expects", party=site, round=client.round_id,
                                         stage=client.stage)
        message, reply = decode_message(take(request, "payload", bytes, where)), {}
        if stage is Stage.MASKED_INPUT:
            if not isinstance(message, ShareBundle):
                raise UnexpectedMessageError(f"{type(message).__name__} is not accepted in this stage", party=site, stage=stage)
            model = check_model(request["arrays"], where)
            if not hmac.compare_digest(model_digest(model), digest):
                raise ProtocolViolationError(f"{where}: the model differs from the one the round was set up with "
                                             "(a server may not send different models to different sites)", party=site, stage=stage)
            vector, reply["spec"], reply["metrics"] = self._input(client, model, max_weight, dp_bytes, site, where)
            client.set_input(vector)
        reply["payload"] = client.handle(message).to_bytes()
        if client.stage in (Stage.DONE, Stage.ABORTED):
            self._kept = None
        return reply

    def _setup(self, request: dict[str, Any], site: str, where: str) -> dict[str, bytes]:
        config = load_config(take(request, "config", bytes, where))
        sites_bytes, dp_bytes, digest = (take(request, name, bytes, where) for name in ("sites", "dp", "model"))
        client_id, round_id = take(request, "client-id", int, where), take(request, "round", int, where)
        max_weight = take(request, "max-weight", float, where)
        if not (np.isfinite(max_weight) and max_weight > 0) or len(digest) != 32 or round_id < 0:
            raise MalformedMessageError(f"{where}: max-weight, model digest or round out of range", party=site)
        sites = unpack_members(sites_bytes)
        if list(sites) != sorted(set(sites)):
            raise MalformedMessageError(f"{where}: the site list must be sorted and without repeats", party=site)
        check_join(config, nodes=sites, client_id=client_id, node=site, round_id=round_id, last_round=self._joined,  # type: ignore[arg-type]
                   min_clients=self.min_clients, dp=dp_from_bytes(dp_bytes, config.num_clients),
                   min_noise_multiplier=self.min_noise_multiplier)
        signing_key, verify_keys = round_keys(config, client_id, (), None, None, required_colluders=self.max_colluders,
                                              round_id=round_id)
        if self._joined is None:
            log.warning("fedcrypt secagg: site %s has no roster: it joins honest-but-curious rounds only", site)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once above
            client = ClientProtocol(config, client_id, round_id=round_id, signing_key=signing_key, verify_keys=verify_keys,
                                    associated_data=round_binding(job_run_id(), round_id, sites_bytes + dp_bytes + digest))
        advert = client.advertise()
        self._kept, self._joined = (client, max_weight, digest, dp_bytes), round_id
        return {"payload": advert.to_bytes()}

    def _input(self, client: ClientProtocol, model: dict[str, np.ndarray], max_weight: float, dp_bytes: bytes, site: str,
               where: str) -> tuple[np.ndarray, bytes, bytes]:
        """Train; the vector to mask, the spec's bytes and the metric names' bytes."""
        params, weight, metrics = train_reply(self.fit(model, {"round": client.round_id, "site": site}), max_weight, where)
        spec = TensorSpec.from_tensors(params)
        dp = dp_from_bytes(dp_bytes, client.config.num_clients, spec.size)
        if dp is None:
            names = tuple(sorted(metrics))
            values = np.concatenate([spec.flatten(params).astype(np.float64), [metrics[n] for n in names], [1.0]])
            return values * (weight / max_weight), spec.to_bytes(), pack_members(names)
        if TensorSpec.from_tensors(model).digest() != spec.digest():
            raise SpecMismatchError(f"{where}: the trained model's layout differs from the global model's")
        delta = spec.flatten(params).astype(np.float64) - spec.flatten(model).astype(np.float64)
        return dp.encode(delta).astype(client.config.codec.ring_dtype), spec.to_bytes(), pack_members(())
