"""Child process of the native-code fuzzer (run by tests/fuzz/_native.py; not a test module).

Protocol on stdin/stdout, each message ``>II`` (JSON length, binary length) + JSON + binary:

* setup ``{"family", "mem_extra", "progress", "shapes", "seed"}`` + the secret context; the
  child builds its objects, then caps its address space (RLIMIT_AS) at its current size
  plus ``mem_extra`` bytes, and answers ``{"ready": true}``;
* ``{"op": "run", "decoder"}`` + input: one input, answered with its outcome;
* ``{"op": "gen", "decoder", "start", "stop"}``: inputs ``start..stop-1`` generated here by
  :func:`_mutate.input_for`; before each one the child writes its index into the
  ``progress`` file (mmap), so after a crash the parent knows which input killed it.

An outcome is ``ok`` (decoded), ``typed`` (a FedcryptError) or ``untyped`` (anything else:
a finding). A signal or an exit is seen by the parent as the end of the pipe.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
import resource
import struct
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _mutate import Shape, input_for  # noqa: E402

_FRAME = struct.Struct(">II")


def _read(stream) -> tuple[dict, bytes] | None:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    jlen, blen = _FRAME.unpack(head)
    return json.loads(stream.read(jlen)), stream.read(blen)


def _write(message: dict) -> None:
    raw = json.dumps(message).encode()
    sys.stdout.buffer.write(_FRAME.pack(len(raw), 0) + raw)
    sys.stdout.buffer.flush()


def _vm_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _ckks_decoders(secret: bytes) -> dict:
    from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner

    owner = KeyOwner.from_bytes(secret)
    server = AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())

    def add(blob: bytes) -> None:
        total = server.start()
        try:
            total.add(blob, 1)
        except Exception:
            assert total.count == 0, "a rejected upload changed the sum"
            raise

    return {
        "EncryptedSum.add": add,
        "KeyOwner.decrypt": owner.decrypt,
        "AggregatorContext.from_bytes": AggregatorContext.from_bytes,
        "KeyOwner.from_bytes": KeyOwner.from_bytes,
        "CkksParams.from_bytes": CkksParams.from_bytes,
    }


def _threshold_decoders(secret: bytes) -> dict:
    import importlib

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    decoders = importlib.import_module("fuzz._threshold_corpus").decoders  # OpenFHE only under Python 3.10

    return decoders(secret)


def main() -> None:
    from fedcrypt.errors import FedcryptError

    stdin = sys.stdin.buffer
    setup, secret = _read(stdin)
    decoders = (_ckks_decoders if setup["family"] == "ckks" else _threshold_decoders)(secret)
    decoders["selftest.abort"] = lambda data: os.abort()  # the harness's own check: a crash is seen
    decoders["selftest.alloc"] = lambda data: bytearray(4 << 30)  # and an allocation past the limit
    shapes = {
        name: [Shape(base64.b64decode(s["data"]), [tuple(f) for f in s["fields"]], s["headers"], tuple(s["words"]),
                     s["object_at"], s["size_prefix"], s["doubles"]) for s in items]
        for name, items in setup["shapes"].items()
    }
    seed = setup["seed"]
    progress_fd = os.open(setup["progress"], os.O_RDWR)
    progress = mmap.mmap(progress_fd, 8)
    for name, items in shapes.items():  # warm up every path once before the limit
        for shape in items:
            try:
                decoders[name](shape.data)
            except FedcryptError:
                pass
    limit = _vm_bytes() + int(setup["mem_extra"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _write({"ready": True})

    def one(name: str, data: bytes) -> tuple[str, str]:
        try:
            decoders[name](data)
            return "ok", ""
        except FedcryptError as exc:
            if not str(exc):
                return "untyped", f"{type(exc).__name__} without a message"
            return "typed", type(exc).__name__
        except BaseException as exc:  # noqa: BLE001 - the finding
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
            return "untyped", f"{type(exc).__name__}: {str(exc)[:200]} | {''.join(tb)[-600:]}"

    while True:
        message = _read(stdin)
        if message is None:
            return
        request, blob = message
        if request["op"] == "run":
            status, detail = one(request["decoder"], blob)
            _write({"status": status, "detail": detail})
        elif request["op"] == "gen":
            name = request["decoder"]
            corpus = shapes[request.get("shapes_of") or name]
            counts: dict[str, int] = {}
            findings = []
            for index in range(request["start"], request["stop"]):
                progress[:8] = struct.pack("<q", index)
                status, detail = one(name, input_for(corpus, seed, name, index))
                counts[status] = counts.get(status, 0) + 1
                if status == "untyped":
                    findings.append([index, detail])
            _write({"status": "done", "counts": counts, "findings": findings})


if __name__ == "__main__":
    main()
