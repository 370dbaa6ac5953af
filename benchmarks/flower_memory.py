"""Flower server peak memory, 3 vs 30 nodes, per protection (issue #16: "30 nodes at most 1.3x 3 nodes").

Usage::

    python -m benchmarks.flower_memory                      # d = 1e6, 3 and 30 nodes
    python -m benchmarks.flower_memory --quick              # d = 1e5
    python -m benchmarks.flower_memory --protections threshold   # on the CPython 3.10
        # environment of scripts/setup_py310.sh (OpenFHE); elsewhere threshold is skipped

Options: ``--d D``, ``--nodes 3 30``, ``--protections secagg secagg-roster ckks ckks-roster
threshold threshold-roster``, ``--pull one all``. A protection whose extra is not installed
(TenSEAL for ``ckks*``, OpenFHE for ``threshold*``) is reported as skipped, not failed.

What is measured: one FedAvg train round of the real strategy (``FedAvg.start``, one round,
no evaluation) through the protection's ``*Grid``/``*Workflow``, in a child process that
runs the server side only (the ServerApp: strategy, workflow, protocol core). Its grid
(:class:`RemoteGrid`) pushes each request, serialised with Flower's protobuf, through a pipe
to this process, which plays the SuperLink and the SuperNodes: it runs every node's real
ClientApp (the protection's mod, a persistent ``Context`` per node) as soon as a request is
pushed and keeps the reply until the server pulls it. Client work therefore never counts in
the server's figures, and every reply is ready at the first pull (fast nodes). The round's
model is one float32 tensor of ``d`` values; node ``p`` returns ``model + 0.01 (p + 1)`` with
``num-examples = 10 (p + 1)``.

Server figures, per (protection, nodes, pull): peak Python-traced memory (``tracemalloc``,
started after the imports, the strategy's model included; numpy buffers are traced, the
C++ heaps of TenSEAL and OpenFHE are not) and peak RSS (``VmHWM``; reset to the current RSS
before the round where the kernel allows it), with the round's part ``peak RSS - RSS before
the round``. The ratio is 30 nodes over 3 nodes; the target is 1.3 for the streaming modes.
The JSON's ``traced_peak_by_stage`` and ``peak_rss_by_stage`` split both peaks by stage (each
stage's exchange: push, pull and fold, and the server's work before it, ``to STAGE``: the
previous stage's ``end_stage`` and the serialised requests), which says what the server
holds where (the RSS split needs the peak reset; without it only the round's peak is known).

Two pull disciplines (``--pull``):

* ``one``: a pull returns at most one reply, as the tests' ``PullGrid``: what the workflow's
  fold costs when replies come one by one;
* ``all``: a pull returns every reply already in, as a Flower SuperLink answers
  ``pull_messages`` (``PullMessages`` returns all the replies to the given ids that have
  arrived): with fast nodes the whole stage's replies arrive in one pull.

With a roster, CKKS and threshold CKKS keep the ``n`` signed uploads until DECRYPT (a
decryptor sums them itself, SECURITY.md): both keep them in a temporary file, not in memory,
and stream the set to the decryptors (threshold: every key holder, in lockstep) in parts of
at most ``part_bytes`` (16 MiB for CKKS, 32 MiB for threshold CKKS, at least one upload), so
the server's memory is one aggregate, one upload and one part whatever ``n``. SecAgg with a roster (``verify_survivors``) folds masked inputs as they
arrive. The clients' work grows with ``n`` in the roster modes (each decryptor sums every
upload): at d = 1e6 and 30 nodes a threshold run takes long; ``--quick`` is d = 1e5 (there a
part holds several uploads, so 30 nodes hold more per part than 3).
``threshold-roster`` at d = 1e6 and 30 nodes takes well over 7 GB in the server process
(the uploads, then each DECRYPT request carrying all of them): on a shared machine measure
it with ``--quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import logging
import multiprocessing as mp
import shlex
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from benchmarks._common import write_result

PROTECTIONS = ("secagg", "secagg-roster", "ckks", "ckks-roster", "threshold", "threshold-roster")
PULLS = ("one", "all")
RUN_ID = 4242
SERVER_NODE = 0
TARGET = 1.3
#: The modes expected to stream (one aggregate plus one upload in flight) and so to meet TARGET.
STREAMING = ("secagg", "secagg-roster", "ckks", "ckks-roster", "threshold", "threshold-roster")


# ----------------------------------------------------------------------------- shared helpers
def _task_identity() -> None:
    """Set Flower's task identity where it has one (flwr >= 1.42: a Message needs a run id)."""
    try:
        from flwr.supercore.task_identity import TaskIdentity
    except ImportError:  # flwr < 1.42 (the threshold environment's 1.30) has none and needs none
        return
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SERVER_NODE, 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Flower's and fedcrypt's per-round logs at ERROR only, restored afterwards."""
    import flwr.common.logger  # noqa: F401 - Flower sets its logger's level when imported: quiet it after

    loggers = [logging.getLogger(name) for name in ("flwr", "fedcrypt", "fedcrypt.integrations.flower")]  # the last sets its own level
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _to_bytes(message: Any) -> bytes:
    from flwr.common.serde import message_to_proto

    return message_to_proto(message).SerializeToString()


def _from_bytes(data: bytes) -> Any:
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    return message_from_proto(ProtoMessage.FromString(data))


def _proc_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``None`` where there is no procfs)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: ``clear_refs`` 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def unavailable(protection: str) -> str | None:
    """Why ``protection`` cannot run in this interpreter (``None``: it can)."""
    if importlib.util.find_spec("flwr") is None:
        return "flwr is not installed (extra 'flower')"
    if protection.startswith("ckks") and importlib.util.find_spec("tenseal") is None:
        return "TenSEAL is not installed (extra 'he')"
    if protection.startswith("threshold"):
        if importlib.util.find_spec("openfhe") is None:
            return "OpenFHE is not installed (extra 'threshold', CPython 3.10: scripts/setup_py310.sh)"
        try:
            import fedcrypt.integrations.flower.threshold  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - an unusable backend is a skip, with its reason
            return f"the threshold adapter does not load: {type(exc).__name__}: {exc}"
    return None


def _threshold_config(params_bytes: bytes, roster: Any = None) -> Any:
    from fedcrypt.he.threshold import ThresholdParams
    from fedcrypt.he.threshold.round import ThresholdConfig

    return ThresholdConfig(ThresholdParams.from_bytes(params_bytes), min_contributions=2, max_weight=1000.0, roster=roster)


# ----------------------------------------------------------------------------- server child
class RemoteGrid:
    """Factory of the server child's grid (a ``flwr`` Grid subclass made on first use, so that
    this module imports without Flower)."""

    @staticmethod
    def make(conn: Any, node_ids: list[int], pull: str) -> Any:
        from types import SimpleNamespace

        from flwr.app import Message
        from flwr.serverapp import Grid

        class _RemoteGrid(Grid):
            """Push serialises each message to the SuperLink process; pull brings replies back (``pull``: one or all)."""

            def __init__(self) -> None:
                self._run = SimpleNamespace(run_id=RUN_ID)
                self.pushed = self.pulled = self.pulls = 0

            def set_run(self, run: Any) -> None:  # noqa: D102
                self._run = run

            @property
            def run(self) -> Any:  # noqa: D102
                return self._run

            def create_message(self, content: Any, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Any:  # noqa: D102
                return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

            def get_node_ids(self) -> Iterable[int]:  # noqa: D102
                return list(node_ids)

            def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:  # noqa: D102
                ids = []
                for message in messages:
                    message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
                    conn.send(("push", _to_bytes(message)))  # one serialised request at a time
                    conn.recv()
                    ids.append(message.metadata.message_id)
                    self.pushed += 1
                return ids

            def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:  # noqa: D102
                conn.send(("pull", list(message_ids), pull))
                blobs = conn.recv()
                replies = [_from_bytes(blob) for blob in blobs]  # like Flower's grid: the whole response, then its messages
                del blobs
                self.pulls += 1
                self.pulled += len(replies)
                return replies

            def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:  # noqa: D102
                pending, replies = set(self.push_messages(list(messages))), []
                while pending:
                    for reply in self.pull_messages(pending):
                        pending.discard(reply.metadata.reply_to_message_id)
                        replies.append(reply)
                return replies

        return _RemoteGrid()


def _server_child(conn: Any, spec: dict[str, Any]) -> None:
    """The ServerApp side of one round, measured (see the module docstring)."""
    with _quiet():
        _task_identity()
        _measured_round(conn, spec)


def _measured_round(conn: Any, spec: dict[str, Any]) -> None:
    from flwr.app import Array, ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    from fedcrypt.identity import Roster

    protection, n, d = spec["protection"], len(spec["node_ids"]), spec["d"]
    roster = Roster.from_bytes(spec["roster"]) if spec["roster"] is not None else None
    timeouts = {"stage_timeout": 3600.0, "poll_interval": 0.005}
    if protection.startswith("secagg"):
        from fedcrypt.integrations.flower import SecAggGrid, SecAggWorkflow

        workflow = SecAggWorkflow(clip=8.0, roster=roster, **timeouts)
        wrap: Any = SecAggGrid
    elif protection.startswith("ckks"):
        from fedcrypt.integrations.flower.ckks import CkksGrid, CkksWorkflow, default_config

        workflow, wrap = CkksWorkflow(default_config(roster=roster), **timeouts), CkksGrid
    else:
        from fedcrypt.integrations.flower.threshold import ThresholdGrid, ThresholdWorkflow

        workflow = ThresholdWorkflow(_threshold_config(spec["threshold_params"], roster), **timeouts)
        wrap = ThresholdGrid
    grid = RemoteGrid.make(conn, spec["node_ids"], spec["pull"])
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    stage_peaks = _trace_stages(workflow)
    gc.collect()
    rss_before = _proc_kib("VmRSS")
    reset = _reset_peak_rss()
    tracemalloc.start()
    start = time.perf_counter()
    model = ArrayRecord({"w": Array(np.zeros(d, dtype=np.float32))})  # the global model: the server's own
    result = strategy.start(grid=wrap(grid, workflow), initial_arrays=model, num_rounds=1, timeout=3600.0)
    wall = time.perf_counter() - start
    _close_segment(stage_peaks, "after the round")
    by_stage, rss_by_stage = stage_peaks["traced"], stage_peaks["rss"]
    traced_peak = max(by_stage.values())
    tracemalloc.stop()
    hwm = max(rss_by_stage.values()) // 1024 if rss_by_stage else None
    report = workflow.reports[-1] if workflow.reports else None
    got = result.arrays["w"].numpy()
    expected = 0.01 * sum((p + 1) ** 2 for p in range(n)) / sum(p + 1 for p in range(n))  # FedAvg of the nodes' updates
    conn.send(("result", {
        "traced_peak_bytes": traced_peak,
        "peak_rss_bytes": None if hwm is None else hwm * 1024,
        "rss_before_round_bytes": None if rss_before is None else rss_before * 1024,
        "round_rss_bytes": None if hwm is None or rss_before is None else (hwm - rss_before) * 1024,
        "peak_rss_reset": reset,
        "server_wall_s": wall,
        "pushed": grid.pushed, "pulled": grid.pulled, "pulls": grid.pulls,
        "survivors": len(report.survivors) if report is not None else 0,
        "aborted": None if report is None else report.aborted,
        "bytes_up": None if report is None else report.bytes_up,
        "stage_seconds": {} if report is None else dict(report.stage_seconds),
        "max_abs_error": float(np.max(np.abs(got.astype(np.float64) - expected))) if got.shape == (d,) else None,
        "traced_peak_by_stage": by_stage,
        "traced_peak_stage": max(by_stage, key=by_stage.__getitem__),
        "peak_rss_by_stage": rss_by_stage,
        "peak_rss_stage": max(rss_by_stage, key=rss_by_stage.__getitem__) if rss_by_stage else None,
    }))


def _close_segment(peaks: dict[str, dict[str, int]], label: str) -> None:
    """Record the traced peak and the peak RSS since the last segment under ``label`` and start a new segment."""
    _, peak = tracemalloc.get_traced_memory()
    traced, rss = peaks.setdefault("traced", {}), peaks.setdefault("rss", {})
    traced[label] = max(traced.get(label, 0), peak)
    tracemalloc.reset_peak()
    hwm = _proc_kib("VmHWM")
    if hwm is not None:
        rss[label] = max(rss.get(label, 0), hwm * 1024)
        _reset_peak_rss()


def _trace_stages(workflow: Any) -> dict[str, dict[str, int]]:
    """Traced peak and peak RSS per segment of the round (``{"traced": {label: bytes}, "rss":
    {label: bytes}}``): each stage's exchange (push, pull, fold: label ``STAGE``) and the server
    work before it (the previous stage's ``end_stage``, the requests: ``to STAGE``). Wraps the
    workflow's exchange of one stage (an internal of the adapters)."""
    peaks: dict[str, dict[str, int]] = {}
    exchange = workflow._exchange

    def traced(grid: Any, stage: Any, *args: Any, **kwargs: Any) -> Any:
        label = getattr(stage, "name", str(stage))
        _close_segment(peaks, f"to {label}")
        try:
            return exchange(grid, stage, *args, **kwargs)
        finally:
            _close_segment(peaks, label)

    workflow._exchange = traced
    return peaks


# ----------------------------------------------------------------------------- the SuperLink and SuperNodes (this process)
class Federation:
    """The nodes of one case: real ClientApps with the protection's mod, one ``Context`` per node,
    state keys and journals (and, with a roster, identities and the pinned roster) in ``workdir``."""

    def __init__(self, protection: str, n: int, workdir: Path, threshold_params: bytes | None) -> None:
        _task_identity()
        from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
        from flwr.clientapp import ClientApp

        from fedcrypt.identity import NodeIdentity, Roster
        from fedcrypt.integrations.flower import NODE_IDENTITY, NODE_ROSTER, NODE_ROSTER_DIGEST
        from fedcrypt.integrations.flower._state import NODE_JOURNAL, NODE_STATE_KEY

        if protection.startswith("secagg"):
            from fedcrypt.integrations.flower import SecAggMod

            mod: Any = SecAggMod()
        elif protection.startswith("ckks"):
            from fedcrypt.integrations.flower.ckks import CkksMod

            mod = CkksMod()
        else:
            from fedcrypt.integrations.flower.threshold import ThresholdMod

            assert threshold_params is not None
            mod = ThresholdMod(_threshold_config(threshold_params))
        app = ClientApp(mods=[mod])

        @app.train()
        def train(msg: Any, context: Any) -> Any:
            partition = int(context.node_config["partition-id"])
            update = (msg.content["arrays"]["w"].numpy() + np.float32(0.01 * (partition + 1))).astype(np.float32)
            content = RecordDict({"arrays": ArrayRecord({"w": Array(update)}),
                                  "metrics": MetricRecord({"num-examples": 10 * (partition + 1)})})
            return Message(content=content, reply_to=msg)

        self.app, self.errors = app, []
        # large, unordered 64-bit node ids, like Flower's
        self.node_ids = [10_000_000_000 * (i + 1) + 7919 * ((i * 5) % n) for i in range(n)]
        self.roster = None
        identities = {}
        if protection.endswith("-roster"):
            for i in range(n):
                identities[i] = NodeIdentity.generate()
                identities[i].save(workdir / f"node-{i}.pem")
            self.roster = Roster({f"node-{i}": identity.public_bytes for i, identity in identities.items()})
            self.roster.save(workdir / "roster.txt")
        self.contexts = {}
        for i, node in enumerate(self.node_ids):
            config: dict[str, Any] = {"partition-id": i, "num-partitions": n, NODE_STATE_KEY: str(workdir / f"state-{i}.key"),
                                      NODE_JOURNAL: str(workdir / "journal")}
            if self.roster is not None:
                config.update({NODE_IDENTITY: str(workdir / f"node-{i}.pem"), NODE_ROSTER: str(workdir / "roster.txt"),
                               NODE_ROSTER_DIGEST: self.roster.digest().hex()})
            self.contexts[node] = Context(RUN_ID, node, config, RecordDict(), {})

    def answer(self, request_bytes: bytes) -> tuple[str, bytes]:
        """Run the destination node's ClientApp on one serialised request: its message id and the serialised reply."""
        from flwr.app import Error, Message

        request = _from_bytes(request_bytes)
        try:
            reply = self.app(request, self.contexts[request.metadata.dst_node_id])
        except Exception as exc:  # noqa: BLE001 - Flower turns ClientApp exceptions into error replies
            self.errors.append(f"{type(exc).__name__}: {exc}")
            reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=request)
        return request.metadata.message_id, _to_bytes(reply)


def measure(protection: str, n: int, d: int, pull: str, threshold_params: bytes | None = None) -> dict[str, Any]:
    """One round's server figures for ``protection`` with ``n`` nodes, ``d`` values, ``pull`` discipline."""
    ctx = mp.get_context("spawn")
    with _quiet(), tempfile.TemporaryDirectory(prefix="fedcrypt-flower-memory-") as tmp:
        federation = Federation(protection, n, Path(tmp), threshold_params)
        spec = {"protection": protection, "node_ids": federation.node_ids, "d": d, "pull": pull,
                "roster": None if federation.roster is None else federation.roster.to_bytes(),
                "threshold_params": threshold_params}
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_server_child, args=(child, spec), daemon=True)
        proc.start()
        child.close()
        inbox: dict[str, bytes] = {}  # replies waiting at the "SuperLink", in arrival order
        client_seconds, result = 0.0, None
        try:
            while result is None:
                kind, *rest = parent.recv()
                if kind == "push":
                    start = time.perf_counter()
                    message_id, reply = federation.answer(rest[0])
                    client_seconds += time.perf_counter() - start
                    inbox[message_id] = reply
                    parent.send(None)
                elif kind == "pull":
                    wanted, discipline = set(rest[0]), rest[1]
                    ready = [message_id for message_id in inbox if message_id in wanted]
                    ready = ready[:1] if discipline == "one" else ready
                    parent.send([inbox.pop(message_id) for message_id in ready])
                elif kind == "result":
                    result = rest[0]
        except EOFError:
            raise RuntimeError(f"the server process of {protection} n={n} died (exit code {proc.exitcode})") from None
        finally:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    return {"protection": protection, "nodes": n, "d": d, "pull": pull, "client_seconds": client_seconds,
            "client_errors": federation.errors[:5], **result}


# ----------------------------------------------------------------------------- main
def _ratio(large: Any, small: Any) -> float | None:
    return None if not large or not small else large / small


def summarise(rows: list[dict[str, Any]], small: int, large: int) -> list[dict[str, Any]]:
    """The ratio ``large`` over ``small`` nodes per (protection, pull), for traced, round RSS and peak RSS."""
    out = []
    for protection in PROTECTIONS:
        for pull in PULLS:
            pair = {r["nodes"]: r for r in rows if "skipped" not in r and r["protection"] == protection and r["pull"] == pull}
            if small not in pair or large not in pair:
                continue
            a, b = pair[small], pair[large]
            entry = {
                "protection": protection, "pull": pull, "small": small, "large": large,
                "traced_ratio": _ratio(b["traced_peak_bytes"], a["traced_peak_bytes"]),
                "round_rss_ratio": _ratio(b["round_rss_bytes"], a["round_rss_bytes"]),
                "peak_rss_ratio": _ratio(b["peak_rss_bytes"], a["peak_rss_bytes"]),
                "streams_by_design": protection in STREAMING,
            }
            entry["meets_target"] = (entry["traced_ratio"] is not None and entry["traced_ratio"] <= TARGET
                                     and (entry["round_rss_ratio"] is None or entry["round_rss_ratio"] <= TARGET))
            out.append(entry)
    return out


def _mb(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def _x(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(rows: list[dict[str, Any]], summary: list[dict[str, Any]], small: int, large: int) -> None:
    head = (f"{'protection':<18}{'pull':<5}{f'traced {small}':>11}{f'traced {large}':>11}{'ratio':>7}"
            f"{f'dRSS {small}':>10}{f'dRSS {large}':>10}{'ratio':>7}{f'RSS {small}':>9}{f'RSS {large}':>9}{'ratio':>7}  target")
    print(head + "\n" + "-" * len(head))
    for s in summary:
        a, b = ({r["nodes"]: r for r in rows if "skipped" not in r and r["protection"] == s["protection"]
                 and r["pull"] == s["pull"]}[k]
                for k in (small, large))
        verdict = ("ok" if s["meets_target"] else "OVER") if s["streams_by_design"] else "n/a (keeps n uploads by design)"
        print(f"{s['protection']:<18}{s['pull']:<5}{_mb(a['traced_peak_bytes']):>11}{_mb(b['traced_peak_bytes']):>11}"
              f"{_x(s['traced_ratio']):>7}{_mb(a['round_rss_bytes']):>10}{_mb(b['round_rss_bytes']):>10}"
              f"{_x(s['round_rss_ratio']):>7}{_mb(a['peak_rss_bytes']):>9}{_mb(b['peak_rss_bytes']):>9}"
              f"{_x(s['peak_rss_ratio']):>7}  {verdict}")
    print("(MB; traced: tracemalloc peak; dRSS: peak RSS minus RSS before the round; RSS: peak RSS of the server process)")
    for r in rows:
        if "skipped" in r:
            print(f"skipped {r['protection']}: {r['skipped']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 1e5 (unless --d is given)")
    parser.add_argument("--d", type=int, default=None, help="model size (default 1e6, 1e5 with --quick)")
    parser.add_argument("--nodes", type=int, nargs=2, default=[3, 30], metavar=("SMALL", "LARGE"))
    parser.add_argument("--protections", nargs="+", choices=PROTECTIONS, default=list(PROTECTIONS))
    parser.add_argument("--pull", nargs="+", choices=PULLS, default=list(PULLS))
    args = parser.parse_args(argv)
    d = args.d if args.d is not None else (100_000 if args.quick else 1_000_000)
    small, large = args.nodes
    if not 2 <= small < large:
        parser.error("--nodes needs 2 <= SMALL < LARGE")
    rows: list[dict[str, Any]] = []
    for protection in args.protections:
        why = unavailable(protection)
        if why is not None:
            rows.append({"protection": protection, "skipped": why})
            continue
        for n in (small, large):
            params = None
            if protection.startswith("threshold"):  # built once per committee (OpenFHE's noise is measured): nodes and server share it
                from fedcrypt.integrations.flower.threshold import default_config

                params = default_config(n).params.to_bytes()
            for pull in args.pull:
                row = measure(protection, n, d, pull, params)
                rows.append(row)
                print(f"  {protection:<16} n={n:<3} pull={pull:<4} traced {_mb(row['traced_peak_bytes'])} MB, "
                      f"dRSS {_mb(row['round_rss_bytes'])} MB, RSS {_mb(row['peak_rss_bytes'])} MB, "
                      f"peaks at {row['traced_peak_stage']} (traced), {row['peak_rss_stage']} (RSS), survivors {row['survivors']}, "
                      f"server {row['server_wall_s']:.1f} s, clients {row['client_seconds']:.1f} s"
                      + (f", ABORTED {row['aborted']}" if row["aborted"] else ""), flush=True)
    summary = summarise(rows, small, large)
    print()
    print_table(rows, summary, small, large)
    command = "python -m benchmarks.flower_memory " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    name = "flower_memory" + ("_quick" if args.quick else "")
    if args.protections != list(PROTECTIONS):
        name += "-" + "-".join(args.protections)
    path = write_result(name, {"d": d, "nodes": [small, large], "target": TARGET, "rows": rows, "summary": summary},
                        command.strip())
    print(f"\nwrote {path}")
    ok = all(r.get("aborted") is None and r.get("survivors") == r.get("nodes") for r in rows if "skipped" not in r)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
