"""Parent side of the native-code fuzzer: corpora, shapes, and a crash-tolerant child.

Every input that reaches TenSEAL/SEAL or OpenFHE runs in a child process
(``_native_child.py``) under an address-space limit (``RLIMIT_AS``: its size after set-up
plus ``mem_extra``, 1 GiB by default). An outcome other than a typed
:class:`~fedcrypt.errors.FedcryptError` is a finding: an untyped exception, a death by a
signal (SIGABRT, SIGSEGV), an exit, an allocation past the limit (MemoryError, or
``std::bad_alloc``) or a hang (no progress for ``hang_s`` seconds). The input of every
finding is saved; a crashed child is restarted and the run goes on after the input that
killed it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._fuzz import FUZZ_COUNTS
from ._mutate import Shape, input_for

_FRAME = struct.Struct(">II")
_CHILD = Path(__file__).with_name("_native_child.py")
_MEM_EXTRA = 1 << 30


@dataclass
class Setup:
    """A context's secret bytes (the child rebuilds its decoders from them) and the corpus."""

    family: str
    secret: bytes
    corpus: dict[str, bytes]
    shapes: dict[str, list[Shape]]


@dataclass
class Report:
    """What one fuzz run of one decoder found."""

    decoder: str
    inputs: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------- CKKS corpus
def _seal_ct_shape(prefix: bytes, obj: bytes) -> Shape:
    from . import _seal_format as fmt

    o = len(prefix)
    (count,) = struct.unpack_from("<Q", obj, fmt.CT_COUNT)
    fields = [(o + fmt.CT_PARMS + 8 * i, 8) for i in range(4)]
    fields += [(o + fmt.CT_NTT, 1), (o + fmt.CT_SIZE, 8), (o + fmt.CT_N, 8), (o + fmt.CT_K, 8), (o + fmt.CT_CORRECTION, 8),
               (o + fmt.CT_COUNT, 8)]
    headers = [o + h for h in fmt.headers_of(obj)]
    if len(headers) == 3:
        fields.append((headers[2] + 16, 1))  # PRNG type
    return Shape(prefix + obj, fields, headers, (o + fmt.CT_WORDS, count), o, o - 4 if o else None, [o + fmt.CT_SCALE])


def _blob_shape(blob: bytes) -> Shape:
    from fedcrypt.he.blob import HEADER_BYTES

    from . import _seal_format as fmt

    obj = fmt.plain(blob[HEADER_BYTES + 4 :])
    prefix = blob[:HEADER_BYTES] + struct.pack(">I", len(obj))
    shape = _seal_ct_shape(prefix, obj)
    shape.fields += [(0, 4), (4, 1), (5, 1), (6, 8), (38, 8), (46, 1), (47, 8), (79, 4), (91, 4), (HEADER_BYTES, 4)]
    shape.doubles.append(83)
    return shape


def _params_fields(base: int, raw: bytes) -> tuple[list[tuple[int, int]], list[int]]:
    count = raw[9]
    fields = [(base, 4), (base + 4, 1), (base + 5, 4), (base + 9, 1)] + [(base + 10 + i, 1) for i in range(count)]
    at = base + 10 + count
    fields += [(at, 1), (at + 1, 1), (at + 2, 4)]
    doubles = [at + 6, at + 14, at + 22]
    return fields + [(d, 8) for d in doubles] + [(at + 30, 1)], doubles  # at + 30: the packing byte


def ckks_setup() -> Setup:
    """A compact-preset key owner and one valid input of every CKKS decoder."""
    import numpy as np

    from fedcrypt.he import CkksParams, KeyOwner

    from . import _seal_format as fmt

    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=4))
    server = owner.aggregator_context()
    upload = owner.encrypt(np.random.default_rng(3).uniform(-1, 1, 300))  # test data, not secrets
    total = server.start()
    total.add(upload, 2)
    aggregate = total.finish()
    secret = owner.to_bytes(include_secret_key=True)
    params = owner.params.to_bytes()
    public = server.to_bytes()
    upload_shape, aggregate_shape = _blob_shape(upload), _blob_shape(aggregate)

    pub_fields, pub_doubles = _params_fields(8, params)
    public_shape = Shape(public, [(0, 4), (4, 1), (5, 1), (6, 2), *pub_fields, (8 + len(params), 8)], doubles=pub_doubles)
    key_at = len(public) + 4
    key = fmt.plain(secret[key_at:])
    secret_plain = secret[: len(public)] + struct.pack(">I", len(key)) + key
    (count,) = struct.unpack_from("<Q", key, fmt.SK_WORDS_COUNT)
    secret_shape = Shape(
        secret_plain,
        public_shape.fields + [(len(public), 4), (key_at + fmt.SK_COUNT, 8), (key_at + fmt.SK_WORDS_COUNT, 8)]
        + [(key_at + fmt.SK_PARMS + 8 * i, 8) for i in range(4)],
        [key_at, key_at + fmt.SK_ARRAY],
        (key_at + fmt.SK_WORDS, count),
        key_at,
        len(public),
        pub_doubles + [key_at + fmt.SK_SCALE],
    )
    par_fields, par_doubles = _params_fields(0, params)
    params_shape = Shape(params, par_fields, doubles=par_doubles)
    corpus = {"upload": upload_shape.data, "aggregate": aggregate_shape.data, "public": public,
              "secret": secret_plain, "params": params}
    shapes = {
        "EncryptedSum.add": [upload_shape],
        "KeyOwner.decrypt": [upload_shape, aggregate_shape],
        "AggregatorContext.from_bytes": [public_shape, params_shape],
        "KeyOwner.from_bytes": [secret_shape, public_shape],
        "CkksParams.from_bytes": [params_shape, public_shape],
    }
    return Setup("ckks", secret, corpus, shapes)


# ---------------------------------------------------------------------------- child
class NativeChild:
    """A decoder process fed inputs over a pipe; restarted after a crash."""

    def __init__(self, setup: Setup, *, seed: int = 0, mem_extra: int = _MEM_EXTRA, python: str | None = None,
                 hang_s: float = 60.0) -> None:
        self.setup, self.seed, self.mem_extra, self.hang_s = setup, seed, mem_extra, hang_s
        self.python = python or sys.executable
        self._progress = tempfile.NamedTemporaryFile(prefix="fedcrypt-fuzz-", suffix=".progress", delete=False)  # noqa: SIM115
        self._progress.write(bytes(8))
        self._progress.flush()
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([self.python, str(_CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        shapes = {name: [dict(asdict(s), data=base64.b64encode(s.data).decode()) for s in items]
                  for name, items in self.setup.shapes.items()}
        self._send({"family": self.setup.family, "mem_extra": self.mem_extra, "progress": self._progress.name,
                    "shapes": shapes, "seed": self.seed}, self.setup.secret)
        reply = self._receive(timeout=600)
        if not reply or not reply.get("ready"):
            raise RuntimeError(f"fuzz child did not start: {self._death()}")

    def _send(self, message: dict, blob: bytes = b"") -> None:
        raw = json.dumps(message).encode()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(_FRAME.pack(len(raw), len(blob)) + raw + blob)
        self.proc.stdin.flush()

    def _receive(self, timeout: float) -> dict | None:
        """The next reply, or None when the child died or made no progress for ``timeout`` s."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        last, deadline = self._index(), time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                head = self.proc.stdout.read(_FRAME.size)
                if len(head) < _FRAME.size:
                    return None
                jlen, _ = _FRAME.unpack(head)
                return json.loads(self.proc.stdout.read(jlen))
            index = self._index()
            if index != last:
                last, deadline = index, time.monotonic() + timeout
            elif time.monotonic() > deadline:
                self.proc.kill()
                return None

    def _index(self) -> int:
        with open(self._progress.name, "rb") as handle:
            return struct.unpack("<q", handle.read(8))[0]

    def _death(self) -> str:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def _restart(self) -> str:
        how = self._death()
        assert self.proc is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        self.restarts += 1
        self._start()
        return how

    def run(self, decoder: str, data: bytes) -> tuple[str, str]:
        """One input: ``("ok", "")``, ``("typed", class)``, ``("untyped", detail)``, ``("crash", how)``."""
        FUZZ_COUNTS[f"native.{decoder}"] += 1
        self._send({"op": "run", "decoder": decoder}, data)
        reply = self._receive(self.hang_s)
        if reply is None:
            return "crash", self._restart()
        return reply["status"], reply["detail"]

    def fuzz(
        self, decoder: str, count: int, *, batch: int = 2000, findings_dir: Path | None = None, shapes_of: str | None = None
    ) -> Report:
        """Inputs ``0..count-1`` of ``decoder`` (mutations of the valid inputs of ``shapes_of``,
        default ``decoder``'s own, generated in the child, in batches)."""
        report = Report(decoder)
        self._shapes_of = shapes_of or decoder
        start = 0
        while start < count:
            stop = min(start + batch, count)
            self._send({"op": "gen", "decoder": decoder, "start": start, "stop": stop, "shapes_of": self._shapes_of})
            reply = self._receive(self.hang_s)
            if reply is None:  # crash or hang: the progress file names the input
                index = self._index()
                how = self._restart()
                self._record(report, index, f"crash: {how}", findings_dir)
                report.inputs += index + 1 - start
                report.counts["crash"] = report.counts.get("crash", 0) + 1
                start = index + 1
                continue
            for index, detail in reply["findings"]:
                self._record(report, index, f"untyped: {detail}", findings_dir)
            for status, n in reply["counts"].items():
                report.counts[status] = report.counts.get(status, 0) + n
            report.inputs += stop - start
            start = stop
        FUZZ_COUNTS[f"native.{decoder}"] += report.inputs
        return report

    def _record(self, report: Report, index: int, what: str, findings_dir: Path | None) -> None:
        data = input_for(self.setup.shapes[self._shapes_of], self.seed, report.decoder, index)
        entry = {"index": index, "what": what, "bytes": len(data)}
        if findings_dir is not None:
            findings_dir.mkdir(parents=True, exist_ok=True)
            path = findings_dir / f"{report.decoder}-{self.seed}-{index}.bin"
            path.write_bytes(data)
            entry["saved"] = str(path)
        report.findings.append(entry)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._progress.close()
        os.unlink(self._progress.name)


class CkksChild(NativeChild):
    """A :class:`NativeChild` over the CKKS decoders of :func:`ckks_setup`."""
