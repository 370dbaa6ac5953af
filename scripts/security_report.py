#!/usr/bin/env python
"""Rerun fedcrypt's attack, fuzzing and fault suites and print SECURITY.md's summary tables.

Usage (from the repository root)::

    .venv/bin/python scripts/security_report.py                 # default suites (a few minutes)
    .venv/bin/python scripts/security_report.py --slow          # also the slow ones (long fuzz runs,
                                                                # 200-round memory, 40 ledger kills,
                                                                # Flower SuperNode kills)
    .venv/bin/python scripts/security_report.py --write SECURITY.md   # replace the table block there

What it does:

1. runs every attack of :mod:`fedcrypt.testing.malicious` in-process against SecAgg and
   SecAgg+ (honest-but-curious and ``verify_survivors``), against a Flower ClientApp with
   ``secagg_mod``, and the crafted CKKS aggregates, and records each outcome as it happened;
2. runs pytest on tests/adversarial, tests/fuzz, tests/faults and tests/test_secrets_scan.py
   with the fuzz and fault tests recording their input counts and measurements;
3. prints (and with ``--write`` stores between the ``security-report`` markers) three
   tables: attacks, fuzzed decoders, injected faults, plus the pytest tally with the
   known bugs (strict xfails) named.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- security-report:begin -->", "<!-- security-report:end -->"


# ----------------------------------------------------------------------------- attacks
def secagg_attacks() -> list[tuple[str, str, str, str]]:
    """(attack, configuration, outcome, verdict) rows from real runs."""
    from fedcrypt.secagg import SecAggConfig, Stage
    from fedcrypt.testing import (
        ATTACKS,
        InconsistentModels,
        InProcessClients,
        MaliciousServer,
        ReplayPreviousRound,
        SplitSurvivorViews,
    )

    rows = []
    configs = {
        "SecAgg n=5 t=3": dict(num_clients=5, threshold=3),
        "SecAgg+ n=8 k=4 t=3": dict(num_clients=8, threshold=3, neighbours=4),
    }
    for label, kwargs in configs.items():
        for verify in (False, True):
            config = SecAggConfig(**kwargs, verify_survivors=verify)
            where = f"{label}, {'verify_survivors' if verify else 'honest-but-curious'}"
            for name, attack in ATTACKS.items():
                report = attack(InProcessClients(config, round_id=2)).run()
                rows.append((attack.name, where, report.outcome(), verdict(report, attack.name, verify)))
            previous = MaliciousServer(InProcessClients(config, round_id=1))
            previous.run()
            replay = ReplayPreviousRound(
                InProcessClients(config, round_id=2, signing_keys=previous.endpoints.signing_keys), previous
            )
            report = replay.run()
            rows.append((ReplayPreviousRound.name, where, f"{replay.replays_sent} replays: " + report.outcome(), verdict(report, "", verify)))
            models = {i: b"model-B" if i == 1 else b"model-A" for i in range(config.num_clients)}
            report = InconsistentModels(InProcessClients(config, round_id=2, associated_data=models)).run()
            rows.append((InconsistentModels.name, where + " (model bound in associated data)", report.outcome(), verdict(report, "", verify)))
    report = SplitSurvivorViews(InProcessClients(SecAggConfig(5, 3), round_id=2), colluders=[4]).run()
    rows.append(("survivor split + 1 colluding client", "SecAgg n=5 t=3 (2t > m but not 2t > m + c)", report.outcome(),
                 "outside the threat model: choose 2t > m + c (SECURITY.md)" if not report.defeated else "defeated"))
    report = SplitSurvivorViews(InProcessClients(SecAggConfig(5, 4), round_id=2), colluders=[4]).run()
    rows.append(("survivor split + 1 colluding client", "SecAgg n=5 t=4 (2t > m + c)", report.outcome(), verdict(report, "", False)))
    full = MaliciousServer(InProcessClients(SecAggConfig(5, 3), round_id=1))
    full.run()
    part = MaliciousServer(InProcessClients(SecAggConfig(5, 3), inputs=full.endpoints.inputs, round_id=2),
                           drops={Stage.ADVERTISE_KEYS: {4}})
    part.run()
    exposed = bool((full.server.result.ring_sum - part.server.result.ring_sum == full.endpoints.inputs[4]).all())
    rows.append(("difference of two rounds over different subsets (same inputs)", "SecAgg n=5 t=3",
                 "ATTACK SUCCEEDED: client 4's input exposed" if exposed else "no effect",
                 "outside the threat model: the sum is the output; use DP (SECURITY.md)"))
    return rows + model_check_rows()


def model_check_rows() -> list[tuple[str, str, str, str]]:
    """The model checker's searches: positive controls, then the fixed protocol in both modes."""
    from fedcrypt.secagg import SecAggConfig
    from fedcrypt.testing.modelcheck import check, replay
    from tests.secagg._legacy import LegacyClient

    plus = dict(num_clients=8, threshold=3, neighbours=4, graph_seed=b"g")
    runs = [
        ("model checker: malicious server vs the pre-fix unmask rule (t signatures, no attestation)",
         SecAggConfig(verify_survivors=True, **plus), "malicious", LegacyClient,
         "positive control: the search finds break 1"),
        ("model checker: malicious server", SecAggConfig(verify_survivors=True, **plus), "malicious", None, ""),
        ("model checker: malicious server", SecAggConfig(5, 4, verify_survivors=True, max_colluders=1), "malicious", None, ""),
        ("model checker: deviating server vs the honest-but-curious mode", SecAggConfig(5, 3), "malicious", None,
         "outside the threat model: that mode trusts the server to follow the protocol (it warns)"),
        ("model checker: honest-but-curious server, every dropout pattern", SecAggConfig(5, 4, max_colluders=1),
         "honest-but-curious", None, ""),
    ]
    rows = []
    for name, config, server, factory, expected in runs:
        kwargs = {"client_factory": factory} if factory else {}
        result = check(config, server=server, **kwargs)
        where = (f"{'SecAgg' if config.complete_graph else 'SecAgg+'} n={config.num_clients} k={config.degree} "
                 f"t={config.threshold} c={config.max_colluders}, {config.threat_model}")
        if result.safe:
            outcome = f"no plan ({result.rounds} views, {result.probes} client calls, {result.seconds:.1f} s)"
            rows.append((name, where, outcome, "defeated (no plan exists within the search)"))
            continue
        recovered, true = replay(config, result.plans[0], *([factory] if factory else []))
        exact = "input recovered exactly" if (recovered == true).all() else "replay failed"
        rows.append((name, where, f"ATTACK SUCCEEDED: {exact} ({result.seconds:.1f} s)", expected or "**VULNERABILITY**"))
    return rows


def verdict(report, name: str, verify: bool) -> str:
    if report.defeated:
        if report.refusals:
            return "defeated (typed error)"
        if getattr(report, "server_refusals", None):
            return "defeated (typed error at the honest server object)"
        return "defeated (threshold)"
    if "man in the middle" in name and not verify:
        return "outside the threat model: honest-but-curious mode trusts key relay (SECURITY.md)"
    return "**VULNERABILITY**"


def flower_attacks() -> list[tuple[str, str, str, str]]:
    try:
        from fedcrypt.integrations.flower.testing import FlowerClients, example_client_app, example_train_content
    except Exception as exc:  # noqa: BLE001 - optional extra
        return [("(Flower attacks)", "flwr not installed", f"skipped: {type(exc).__name__}", "")]
    from flwr.app import RecordDict

    from fedcrypt.errors import FedcryptError
    from fedcrypt.secagg import SecAggConfig
    from fedcrypt.testing import ATTACKS, InconsistentModels

    app = example_client_app()
    config = SecAggConfig(5, 3, clip=4.0)
    where = "Flower ClientApp + secagg_mod, n=5 t=3"
    rows = []
    for name, attack in ATTACKS.items():
        report = attack(FlowerClients(app, config, example_train_content())).run()
        rows.append((attack.name, where, report.outcome(), verdict(report, attack.name, False)))

    def inconsistent(client_id: int) -> RecordDict:
        return example_train_content(1.0 if client_id == 3 else 0.0)(client_id)

    endpoints = FlowerClients(app, config, example_train_content())
    endpoints.advertise(0)
    try:
        endpoints.advertise(0)
        rows.append(("replayed setup for a round the node already joined", where,
                     "accepted: the node's protocol state was replaced", "**VULNERABILITY**"))
    except FedcryptError as exc:
        rows.append(("replayed setup for a round the node already joined", where, f"refused ({type(exc).__name__})",
                     "defeated (typed error)"))
    report = InconsistentModels(FlowerClients(app, config, inconsistent)).run()
    rows.append((InconsistentModels.name, where + " (train records bound)", report.outcome(), verdict(report, "", False)))
    return rows


def ckks_attacks() -> list[tuple[str, str, str, str]]:
    try:
        import numpy as np

        from fedcrypt.errors import FedcryptError
        from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner
        from fedcrypt.he.blob import peek_header
    except Exception as exc:  # noqa: BLE001 - optional extra
        return [("(CKKS attacks)", "tenseal not installed", f"skipped: {type(exc).__name__}", "")]
    import struct

    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=4))
    server = AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
    other = KeyOwner.generate(CkksParams.preset("compact", num_clients=4))
    other_server = AggregatorContext.from_bytes(other.aggregator_context().to_bytes())
    rng = np.random.default_rng(1)  # test data, not secrets
    update = rng.uniform(-1, 1, 256)
    where = "CKKS compact, key holder decrypts"

    def aggregate(srv, blob):
        total = srv.start()
        total.add(blob, 1)
        return total.finish()

    honest = aggregate(server, owner.encrypt(update))
    at = 4 + 1 + 1 + 32 + 8 + 1 + 32
    crafted = {
        "aggregate made under another key": aggregate(other_server, other.encrypt(update)),
        "aggregate truncated by one byte": honest[:-1],
        "aggregate with a NaN total weight": honest[: at + 4] + struct.pack(">d", float("nan")) + honest[at + 12 :],
        "aggregate with an inflated ciphertext size": honest[:HEADER()] + b"\xff\xff\xff\xff" + honest[HEADER() + 4 :],
    }
    rows = []
    for name, blob in crafted.items():
        try:
            owner.decrypt_mean(blob)
            rows.append((f"crafted CKKS aggregate: {name}", where, "decrypted", "**VULNERABILITY**"))
        except FedcryptError as exc:
            rows.append((f"crafted CKKS aggregate: {name}", where, f"refused ({type(exc).__name__})", "defeated (typed error)"))
    relabelled = honest[:at] + struct.pack(">Id", 3, 3.0) + honest[at + 12 :]
    try:
        exposed = np.allclose(owner.decrypt(relabelled), update, atol=1e-3) and peek_header(relabelled).contributions == 3
        outcome = "ATTACK SUCCEEDED: the key holder decrypted one client's update" if exposed else "decrypted, not the update"
    except FedcryptError as exc:
        exposed, outcome = False, f"refused ({type(exc).__name__})"
    rows.append(("one client's upload passed off as a 3-client aggregate (header relabelled)", where, outcome,
                 "**VULNERABILITY**" if exposed else "defeated: its provenance lists one summand; a server that also makes "
                 "up the other summands is refused only with a roster (SECURITY.md)"))
    return rows


def HEADER() -> int:  # noqa: N802 - a constant that needs the extra
    from fedcrypt.he.blob import HEADER_BYTES

    return HEADER_BYTES


# ----------------------------------------------------------------------------- pytest
def run_pytest(slow: bool, workdir: Path) -> tuple[dict, dict, dict, str]:
    fuzz_json, fault_json, junit = workdir / "fuzz.json", workdir / "faults.json", workdir / "junit.xml"
    env = dict(os.environ, FEDCRYPT_FUZZ_REPORT=str(fuzz_json), FEDCRYPT_FAULT_REPORT=str(fault_json))
    marker = "slow or not slow" if slow else "not slow"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, f"--junitxml={junit}",
        "tests/adversarial", "tests/fuzz", "tests/faults", "tests/test_secrets_scan.py",
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    tally = {"seconds": round(time.monotonic() - started), "returncode": done.returncode,
             "command": " ".join(["python"] + command[1:5] + [repr(marker)] + command[7:])}
    cases = {"passed": 0, "failed": 0, "xfailed": 0, "skipped": 0, "xfail_reasons": [], "failures": []}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            skipped = case.find("skipped")
            failure = case.find("failure") if case.find("failure") is not None else case.find("error")
            if failure is not None:
                cases["failed"] += 1
                cases["failures"].append(name)
            elif skipped is not None and skipped.get("type") == "pytest.xfail":
                cases["xfailed"] += 1
                cases["xfail_reasons"].append((name, skipped.get("message", "")))
            elif skipped is not None:
                cases["skipped"] += 1
            else:
                cases["passed"] += 1
    tally.update(cases)
    fuzz = json.loads(fuzz_json.read_text()) if fuzz_json.exists() else {}
    faults = json.loads(fault_json.read_text()) if fault_json.exists() else {}
    return fuzz, faults, tally, done.stdout[-3000:]


# ----------------------------------------------------------------------------- tables
def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fuzz_rows(fuzz: dict, tally: dict) -> list[tuple]:
    groups: dict[str, int] = {}
    for name, count in fuzz.items():
        key = re.sub(r"\.from_bytes$", "", name)
        key = re.sub(r"\.(inflated|huge)$", " (length fields inflated)", key)
        groups[key] = groups.get(key, 0) + count
    failed = [f for f in tally["failures"] if "fuzz" in f]
    outcome = "typed errors only; no hang; bounded allocation" if not failed else f"FAILURES: {failed}"
    return [(name, count, outcome) for name, count in sorted(groups.items())]


def fault_rows(faults: dict, tally: dict, slow: bool) -> list[tuple]:
    rows = []
    failures = tally["failures"]
    ok = lambda key: not any(key in f for f in failures)  # noqa: E731
    if "ledger.sigkill" in faults:
        f = faults["ledger.sigkill"]
        rows.append(("privacy-ledger writer SIGKILLed at random points",
                     f"{f['kills']} kills over {f['ledgers']} ledger(s) filled to the budget, {f['rounds']} rounds",
                     f"no acknowledged spend lost ({f['acknowledged']} acknowledged); max spent {f['max_spent']:.3f} "
                     "<= budget 3.0" if ok("ledger_sigkill") else "FAILED"))
    else:
        rows.append(("privacy-ledger writer SIGKILLed at random points", "2 kills (default suite)",
                     "no acknowledged spend lost; never over budget" if ok("ledger_sigkill") else "FAILED"))
    for key, what in (("memory.secagg", "200 SecAgg rounds in one process (d=50,000, 1 dropout)"),
                      ("memory.ckks", "200 CKKS aggregation rounds in one process (d=5,000)")):
        if key in faults:
            f = faults[key]
            rows.append((what, f"{f['rounds']} rounds",
                         f"RSS growth {f['rss_growth_mib']:+.2f} MiB, traced {f['traced_growth_mib']:+.3f} MiB (limit 4 / 1 MiB)"))
        elif not slow:
            rows.append((what, "slow suite", "not run (use --slow)"))
    for stage in ("SHARE_KEYS", "UNMASK"):
        key = f"flower.kill.{stage}"
        what = f"Flower SuperNode SIGKILLed at {stage} (4 nodes, 2 rounds)"
        if key in faults:
            f = faults[key]
            rows.append((what, "1 kill + restart", f"round 1 completed with {f['round1_survivors']} survivors, round 2 with {f['round2_survivors']}"))
        elif slow:
            rows.append((what, "1 kill + restart", "FAILED" if not ok(stage) else "no result recorded"))
        else:
            rows.append((what, "slow suite", "not run (use --slow)"))
    rows.append(("dropouts, replays, corrupted requests at every stage (state machine)", "hypothesis",
                 "exact sum or clean abort; never both shares" if ok("Dropout") else "FAILED"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also run the slow suites")
    parser.add_argument("--write", metavar="FILE", help="replace the block between the security-report markers in FILE")
    args = parser.parse_args(argv)
    rows = secagg_attacks() + flower_attacks() + ckks_attacks()
    with tempfile.TemporaryDirectory(prefix="fedcrypt-security-") as tmp:
        fuzz, faults, tally, tail = run_pytest(args.slow, Path(tmp))
    command = "python scripts/security_report.py" + (" --slow" if args.slow else "")
    parts = [
        f"Produced by `{command}` ({time.strftime('%Y-%m-%d', time.gmtime())}); pytest: "
        f"{tally['passed']} passed, {tally['xfailed']} xfailed (known bugs), {tally['failed']} failed, "
        f"{tally['skipped']} skipped in {tally['seconds']} s.",
        "",
        "**Attacks** (each run for real; the outcome is what the attacker got)",
        "",
        table(("attack", "configuration", "outcome", "verdict"), rows),
        "",
        f"**Fuzzed decoders** ({sum(fuzz.values())} inputs in this run: random, truncated, bit-flipped, "
        "extended, spliced, length fields inflated)",
        "",
        table(("decoder", "inputs", "outcome"), fuzz_rows(fuzz, tally)),
        "",
        "**Injected faults**",
        "",
        table(("fault", "injected", "outcome"), fault_rows(faults, tally, args.slow)),
    ]
    if tally["xfail_reasons"]:
        parts += ["", "**Known bugs (strict xfail tests, open)**", ""]
        parts += [f"- `{name.split('.')[-1]}`: {reason}" for name, reason in tally["xfail_reasons"]]
    if tally["failures"]:
        parts += ["", "**FAILED**: " + ", ".join(tally["failures"]), "", "```", tail, "```"]
    text = "\n".join(parts)
    print(text)
    if args.write:
        path = Path(args.write)
        document = path.read_text(encoding="utf-8")
        if BEGIN not in document or END not in document:
            raise SystemExit(f"{path} has no {BEGIN} ... {END} block")
        head, rest = document.split(BEGIN, 1)
        _, tail_doc = rest.split(END, 1)
        path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail_doc}", encoding="utf-8")
    return 1 if tally["failed"] or any("VULNERABILITY" in r[3] and "xfail" not in r[3] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
