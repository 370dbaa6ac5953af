"""Structure-aware fuzzing of every CKKS decoder down into SEAL, in a child process.

Inputs are mutations of valid uploads, aggregates, public and secret contexts and
parameters (tests/fuzz/_mutate.py: SEAL header fields, the nested DynArray and seed
headers, counts, sizes, flags, scale, coefficient words, truncation, extension, splicing,
zstd re-compression, with the framing repaired so the change reaches the inner checks).
They run in a child process under an address-space limit (tests/fuzz/_native.py), so an
abort, a segfault, an untyped exception, an allocation past the limit or a hang is a
finding, saved under ``FEDCRYPT_FUZZ_FINDINGS`` (default: pytest's tmp dir).

Default run: :data:`FAST_COUNT` inputs per decoder (well under a second each). Slow run
(``-m slow``): :data:`SLOW_COUNT` per decoder. ``FEDCRYPT_FUZZ_SEED`` picks the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ._native import CkksChild, ckks_setup

CKKS_DECODERS = (
    "EncryptedSum.add",
    "KeyOwner.decrypt",
    "AggregatorContext.from_bytes",
    "KeyOwner.from_bytes",
    "CkksParams.from_bytes",
)
FAST_COUNT = 300
SLOW_COUNT = 100_000
SEED = int(os.environ.get("FEDCRYPT_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def ckks_child():
    pytest.importorskip("tenseal")
    child = CkksChild(ckks_setup(), seed=SEED)
    yield child
    child.close()


def _findings(tmp_path: Path) -> Path:
    return Path(os.environ.get("FEDCRYPT_FUZZ_FINDINGS", str(tmp_path)))


def _check(report, count: int) -> None:
    assert report.inputs == count
    assert not report.findings, f"{report.decoder}: {len(report.findings)} findings, first {report.findings[:3]}"
    # the mutator gets past the outer framing: most inputs are refused, some still decode
    assert report.counts.get("typed", 0) >= count // 2 and report.counts.get("ok", 0) >= 1, report.counts


@pytest.mark.timeout(300)
@pytest.mark.parametrize("decoder", CKKS_DECODERS)
def test_ckks_decoder_native_fuzz(ckks_child, decoder: str, tmp_path: Path) -> None:
    _check(ckks_child.fuzz(decoder, FAST_COUNT, batch=FAST_COUNT, findings_dir=_findings(tmp_path)), FAST_COUNT)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("decoder", CKKS_DECODERS)
def test_ckks_decoder_native_fuzz_slow(ckks_child, decoder: str, tmp_path: Path) -> None:
    _check(ckks_child.fuzz(decoder, SLOW_COUNT, batch=5000, findings_dir=_findings(tmp_path)), SLOW_COUNT)


@pytest.mark.timeout(300)
def test_the_harness_sees_an_abort_and_an_allocation_past_the_limit(ckks_child) -> None:
    assert ckks_child.run("selftest.abort", b"") == ("crash", "killed by SIGABRT")
    status, detail = ckks_child.run("selftest.alloc", b"")
    assert status == "untyped" and detail.startswith("MemoryError"), (status, detail)
    # the crashed child was replaced: decoding goes on
    assert ckks_child.run("CkksParams.from_bytes", ckks_child.setup.corpus["params"]) == ("ok", "")
    assert ckks_child.restarts >= 1


@pytest.mark.timeout(300)
def test_a_crash_inside_a_batch_is_saved_and_the_run_goes_on(ckks_child, tmp_path: Path) -> None:
    from ._mutate import input_for

    report = ckks_child.fuzz("selftest.abort", 3, batch=3, findings_dir=tmp_path, shapes_of="CkksParams.from_bytes")
    assert report.inputs == 3 and report.counts == {"crash": 3}
    assert [f["index"] for f in report.findings] == [0, 1, 2]
    saved = Path(report.findings[1]["saved"]).read_bytes()
    assert saved == input_for(ckks_child.setup.shapes["CkksParams.from_bytes"], SEED, "selftest.abort", 1)
