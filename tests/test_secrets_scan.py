"""No key, seed or share ever reaches a log line, an exception message or a repr.

A full SecAgg round (with a dropout, so mask-key shares are revealed too), the attacks of
fedcrypt.testing (so the clients raise their typed errors), and a CKKS round run with
every logger at DEBUG. The test reaches into the parties' objects for every secret they
held (X25519 private keys, self-mask seeds, share-encryption keys, pairwise mask seeds,
Shamir shares, the CKKS secret key), then searches the captured logs, every exception
message and the ``repr``/``str`` of every object for each secret's hex (both cases),
base64 (standard and URL-safe, at every alignment), raw ``bytes`` repr, and for shares
the decimal value.
"""

from __future__ import annotations

import base64
import hashlib
import logging

import numpy as np
import pytest

from fedcrypt.crypto import Secret, Share
from fedcrypt.errors import FedcryptError
from fedcrypt.secagg import SecAggConfig, Stage
from fedcrypt.secagg import keyschedule
from fedcrypt.testing import ATTACKS, InProcessClients, MaliciousServer


def forms(secret: bytes) -> set[str]:
    """Every printable form of ``secret`` we search for (at least 12 characters each)."""
    out = {secret.hex(), secret.hex().upper(), repr(secret)[2:-1]}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            text = encode(secret[offset:]).decode()
            out.add(text[:-4])  # the last block depends on what follows in a longer string
    return {f for f in out if len(f) >= 12}


class Collector:
    """Secrets found in the objects, and every text the run produced."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}
        self.texts: list[str] = []

    def secret(self, label: str, value: bytes | Secret) -> None:
        raw = value.reveal() if isinstance(value, Secret) else bytes(value)
        assert len(raw) >= 16, label
        self.secrets[label] = raw

    def share(self, label: str, share: Share) -> None:
        if share.y < 1 << 128:  # the key-swap attack forges tiny shares: not a client's secret
            return
        self.secret(label, share.to_bytes())
        self.secret(label + ".y", share.y.to_bytes(66, "big"))
        self.texts_forbidden_decimal = getattr(self, "texts_forbidden_decimal", set()) | {str(share.y)}

    def text(self, *objects: object) -> None:
        for obj in objects:
            self.texts.append(repr(obj))
            self.texts.append(str(obj))

    def check(self) -> None:
        haystack = "\n".join(self.texts)
        assert len(self.secrets) > 20
        for label, raw in self.secrets.items():
            for form in forms(raw):
                assert form not in haystack, f"secret {label} appears as {form[:8]}..."
        for decimal in getattr(self, "texts_forbidden_decimal", set()):
            assert decimal not in haystack, "a share value appears in decimal"


@pytest.mark.parametrize("encode", ["hex", "HEX", "b64", "b64url-offset", "bytes-repr"])
def test_the_scanner_finds_a_planted_secret(encode: str) -> None:
    found = Collector()
    secrets_ = {f"s{i}": hashlib.sha256(b"planted %d" % i).digest() for i in range(21)}
    for label, raw in secrets_.items():
        found.secret(label, raw)
    raw = secrets_["s7"]
    planted = {
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "b64": base64.b64encode(raw).decode(),
        "b64url-offset": base64.urlsafe_b64encode(b"xy" + raw).decode(),
        "bytes-repr": repr(raw),
    }[encode]
    found.texts.append(f"log line: key={planted} end")
    with pytest.raises(AssertionError, match="secret s7 appears"):
        found.check()


def harvest_client(found: Collector, client, tag: str) -> None:
    """Every secret a ClientProtocol holds right now (reaching into its slots on purpose)."""
    if client._cipher_keys is not None:
        found.secret(f"{tag}.cipher_sk", client._cipher_keys.private_bytes())
        found.secret(f"{tag}.mask_sk", client._mask_keys.private_bytes())
    if client._self_mask_seed is not None:
        found.secret(f"{tag}.self_mask_seed", client._self_mask_seed)
    for peer, key in client._share_keys.items():
        found.secret(f"{tag}.share_key.{peer}", key)
    for owner, (seed_share, key_share) in client._shares.items():
        found.share(f"{tag}.seed_share.{owner}", seed_share)
        found.share(f"{tag}.key_share.{owner}", key_share)
    if client._mask_keys is not None:
        for peer, advert in client._directory.items():
            if peer != client.client_id:
                shared = client._mask_keys.exchange(advert.mask_public_key)
                seed = keyschedule.pairwise_seed(shared, round_id=client.round_id, a=client.client_id, b=peer, context=client.context)
                found.secret(f"{tag}.pairwise.{peer}", seed)


class Harvesting(MaliciousServer):
    """The honest server, snapshotting the clients' secrets after every stage."""

    def __init__(self, endpoints, found: Collector, **kwargs) -> None:
        super().__init__(endpoints, **kwargs)
        self.found = found

    def extra_stage_work(self, stage: Stage) -> None:
        for i, client in enumerate(self.endpoints.clients):
            harvest_client(self.found, client, f"r{self.round_id}.c{i}")
            self.found.text(client)
        self.found.text(self.server)
        for per_client in self.sent.values():
            for messages in per_client.values():
                self.found.text(*messages)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    return caplog


def test_secagg_round_and_attacks_leak_no_secret(debug_logs: pytest.LogCaptureFixture) -> None:
    found = Collector()
    for verify in (False, True):
        config = SecAggConfig(5, 3, verify_survivors=verify)
        run = Harvesting(InProcessClients(config, round_id=11 + verify, length=32), found, drops={Stage.UNMASK: {2}})
        report = run.run()
        assert report.completed and report.sum_correct
        found.text(report, run.server.result, *run.report.refusals)
        for i, client in enumerate(run.endpoints.clients):
            found.text(client)
            # the client is DONE: misuse now raises, and the message must not print a secret
            with pytest.raises(FedcryptError) as info:
                client.advertise()
            found.texts.append(str(info.value))
        # every attack: the typed errors the clients raised
        for name, attack in ATTACKS.items():
            endpoints = InProcessClients(config, round_id=20, length=8)
            attacker = attack(endpoints)
            attack_report = attacker.run()
            found.texts.extend(f"{r.error}: {r.message}" for r in attack_report.refusals + attack_report.server_refusals)
            found.text(attack_report, attacker)
            for i, client in enumerate(endpoints.clients):
                harvest_client(found, client, f"{name}.{verify}.c{i}")
        # the client secrets of the attacked rounds were harvested after the fact; also
        # feed some garbage to a fresh client for decoder error messages
        fresh = InProcessClients(config, round_id=30, length=8)
        fresh.advertise(0)
        harvest_client(found, fresh.clients[0], f"fresh.{verify}")
        for garbage in (b"", b"FCSA\x01\x02" + bytes(40), b"FCSA\x01\x04" + b"\xff" * 64):
            with pytest.raises(FedcryptError) as info:
                fresh.deliver(0, garbage)
            found.texts.append(str(info.value))
    found.texts.extend(record.getMessage() for record in debug_logs.records)
    found.texts.append(debug_logs.text)
    found.check()


def test_ckks_round_leaks_no_secret_key(debug_logs: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("tenseal")
    from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner

    found = Collector()
    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=4))
    secret_blob = owner.to_bytes(include_secret_key=True)
    public_blob = owner.aggregator_context().to_bytes()
    # the secret-key part: what the secret serialisation has beyond the public one
    secret_part = secret_blob[len(public_blob) :]
    assert len(secret_part) > 1000
    for start in range(0, len(secret_part) - 32, 997):
        found.secret(f"ckks.sk[{start}]", secret_part[start : start + 32])
    server = AggregatorContext.from_bytes(public_blob)
    rng = np.random.default_rng(0)  # test data, not secrets
    total = server.start()
    uploads = [owner.encrypt(rng.uniform(-1, 1, 64)) for _ in range(3)]
    for blob in uploads:
        total.add(blob, 1)
    found.text(owner, server, total)
    aggregate = total.finish()
    owner.decrypt(aggregate)
    for bad in (b"", aggregate[:100], secret_blob, aggregate[:-1]):
        for call in (owner.decrypt, server.start().add):
            try:
                call(bad) if call is owner.decrypt else call(bad, 1)
            except (FedcryptError, TypeError, ValueError) as exc:
                found.texts.append(str(exc))
    for bad in (secret_blob, public_blob):
        try:
            AggregatorContext.from_bytes(bad)
        except FedcryptError as exc:
            found.texts.append(str(exc))
    with pytest.raises(TypeError) as info:
        import pickle

        pickle.dumps(owner)
    found.texts.append(str(info.value))
    found.texts.extend(record.getMessage() for record in debug_logs.records)
    found.check()


# ---------------------------------------------------------------------------- Flower contexts
def test_flower_contexts_reports_and_logs_leak_no_secret(debug_logs: pytest.LogCaptureFixture, tmp_path) -> None:
    """Real in-process Flower SecAgg rounds (honest-but-curious with the default state key and
    a node dropping after key sharing; malicious-server with identities): before every message
    and at the end, every node's secrets (opened from its sealed state with its own key: the
    test's privilege), its state key and its identity key are searched for in ``repr`` and
    ``str`` of every Context, the reports, the workflow, the ClientApp errors and the logs, and
    as raw bytes in the serialised ``Context.state``. (CKKS and threshold CKKS: the secrets
    scans of tests/integrations/test_flower_he.py and tests/he_threshold/test_flower_threshold.py.)"""
    pytest.importorskip("flwr")
    from flower._inprocess import InProcessGrid
    from flower.test_flower_adapter import make_app, run_rounds
    from flower.test_flower_roster import federation
    from flwr.common.serde import recorddict_to_proto

    from fedcrypt.integrations.flower._state import default_state_key_path, node_state_key
    from fedcrypt.integrations.flower import RECORD, STATE, SecAggMod, SecAggWorkflow

    found = Collector()
    raw: list[bytes] = []
    grids: list = []

    def snapshot(grid, node: int) -> None:
        ctxt = grid.contexts[node]
        found.text(ctxt)
        raw.append(recorddict_to_proto(ctxt.state).SerializeToString())
        if STATE in ctxt.state.keys():
            found.secret(f"state-key.{node}", node_state_key(ctxt)._key)
            client = SecAggMod()._load(ctxt, Stage.SHARE_KEYS).client
            harvest_client(found, client, f"flower.{node}.{client.stage.name}")

    def fault(node: int, request):
        grid = grids[-1]
        snapshot(grid, node)
        record = request.content[RECORD] if RECORD in request.content.keys() else None  # not the identification
        if grid.partition_of(node) == 1 and record is not None and record["stage"] == "MASKED_INPUT":
            return "drop"
        return None

    grids.append(InProcessGrid(make_app([SecAggMod()]), 4, {}, fault=fault))  # a fresh mod: it logs its mode once
    honest = SecAggWorkflow(clip=8.0)
    run_rounds(grids[-1], honest, rounds=1)
    assert honest.reports[0].survivors and honest.reports[0].aborted is None
    assert "runs honest-but-curious" in debug_logs.text  # the honest-but-curious round says so (logged once)
    found.secret("default-state-key-file", default_state_key_path().read_bytes())

    grid, roster, identities = federation(tmp_path, 5, fault=fault)
    grids.append(grid)
    for name, identity in identities.items():
        found.secret(f"identity.{name}", identity.signing_key.private_bytes())
    malicious = SecAggWorkflow(clip=8.0, roster=roster)
    run_rounds(grid, malicious, rounds=1)
    assert malicious.reports[0].survivors and malicious.reports[0].aborted is None

    for grid, workflow in zip(grids, (honest, malicious)):
        for node in grid.node_ids:
            snapshot(grid, node)
        found.text(workflow, *workflow.reports)
        found.texts.extend(str(report.to_dict()) for report in workflow.reports)
        found.texts.extend(grid.errors)
    found.texts.extend(record.getMessage() for record in debug_logs.records)
    found.texts.append(debug_logs.text)
    assert any("flower." in label for label in found.secrets) and any("state-key" in label for label in found.secrets)
    found.check()
    state_bytes = b"".join(raw)
    assert len(raw) > 40 and b"FCSL" in state_bytes  # sealed records were there to search
    for label, secret in found.secrets.items():
        assert secret not in state_bytes, f"secret {label} is in Context.state in the clear"
