"""Structure-aware fuzzing of the threshold-CKKS decoders down into OpenFHE, in a child process.

Mutations of a valid upload, decryption share, key share and bare OpenFHE objects (the
cereal metadata words, the length before each key tag and coefficient block, coefficient
words, truncation, extension, splicing; tests/fuzz/_mutate.py) go to every decoder that
takes a peer's OpenFHE bytes, in a child process under an address-space limit
(tests/fuzz/_native.py): an abort, a segfault, an untyped exception, an allocation past the
limit or a hang is a finding, saved under ``FEDCRYPT_FUZZ_FINDINGS``. CPython 3.10 with
OpenFHE only (skipped elsewhere, see conftest.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fuzz helpers

from fuzz._native import NativeChild  # noqa: E402
from fuzz._threshold_corpus import threshold_setup  # noqa: E402

pytestmark = pytest.mark.usefixtures("openfhe")

DECODERS = (
    "ThresholdSum.add",
    "ThresholdDecryption.receive_share",
    "ThresholdServer.receive_key_share",
    "deserialize.ciphertext",
    "deserialize.public_key",
)
FAST_COUNT = 60
#: 10^4 per decoder in CI (about 2 minutes for five decoders); FEDCRYPT_FUZZ_THRESHOLD_COUNT=100000 for 10^5
SLOW_COUNT = int(os.environ.get("FEDCRYPT_FUZZ_THRESHOLD_COUNT", "10000"))
SEED = int(os.environ.get("FEDCRYPT_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def threshold_child(openfhe: Any):
    child = NativeChild(threshold_setup(), seed=SEED)
    yield child
    child.close()


def _check(report, count: int) -> None:
    assert report.inputs == count
    assert not report.findings, f"{report.decoder}: {len(report.findings)} findings, first {report.findings[:3]}"
    assert report.counts.get("typed", 0) >= count // 2, report.counts


def _findings(tmp_path: Path) -> Path:
    return Path(os.environ.get("FEDCRYPT_FUZZ_FINDINGS", str(tmp_path)))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("decoder", DECODERS)
def test_threshold_decoder_native_fuzz(threshold_child, decoder: str, tmp_path: Path) -> None:
    _check(threshold_child.fuzz(decoder, FAST_COUNT, batch=FAST_COUNT, findings_dir=_findings(tmp_path)), FAST_COUNT)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("decoder", DECODERS)
def test_threshold_decoder_native_fuzz_slow(threshold_child, decoder: str, tmp_path: Path) -> None:
    _check(threshold_child.fuzz(decoder, SLOW_COUNT, batch=1000, findings_dir=_findings(tmp_path)), SLOW_COUNT)


def test_every_valid_input_decodes(threshold_child) -> None:
    """The layouts accept what honest parties send (no false refusals in the corpus)."""
    for decoder in DECODERS:
        for shape in threshold_child.setup.shapes[decoder]:
            status, detail = threshold_child.run(decoder, shape.data)
            assert status == "ok", (decoder, status, detail)
