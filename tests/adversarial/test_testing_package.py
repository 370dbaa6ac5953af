"""fedcrypt.testing is importable without the heavy frameworks, and its strategies draw valid values."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given, settings

from fedcrypt.secagg import SecAggConfig, Stage
from fedcrypt.testing import dropout_schedules, flat_vectors, lora_specs, secagg_configs
from fedcrypt.vectors import TensorSpec


def test_import_pulls_no_framework_and_no_hypothesis() -> None:
    code = (
        "import json, sys, fedcrypt.testing, fedcrypt.testing.malicious, fedcrypt.testing.transport\n"
        "print(json.dumps(sorted(m for m in ['torch', 'flwr', 'peft', 'transformers', 'hypothesis', 'tenseal'] if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@settings(max_examples=40, deadline=None)
@given(config=secagg_configs(max_clients=12, verify_survivors=None), spec=lora_specs(), vector=flat_vectors(clip=0.5))
def test_strategies_draw_valid_values(config: SecAggConfig, spec: TensorSpec, vector) -> None:
    assert 2 * config.threshold > config.share_holders
    assert TensorSpec.from_bytes(spec.to_bytes()) == spec
    assert all(e.name.endswith(("lora_A.default.weight", "lora_B.default.weight")) for e in spec.entries)
    assert vector.dtype.name == "float32" and abs(vector).max(initial=0) <= 0.5


@settings(max_examples=40, deadline=None)
@given(data=__import__("hypothesis").strategies.data(), config=secagg_configs(verify_survivors=None))
def test_dropout_schedules_drop_each_client_at_most_once(data, config: SecAggConfig) -> None:
    schedule = data.draw(dropout_schedules(config))
    seen = [c for clients in schedule.values() for c in clients]
    assert len(seen) == len(set(seen)) and all(0 <= c < config.num_clients for c in seen)
    assert config.verify_survivors or Stage.CONSISTENCY_CHECK not in schedule


def test_differencing_two_rounds_over_different_subsets_reveals_a_client_as_documented() -> None:
    """Outside every mode's threat model (SECURITY.md): the sum is output; DP is the defence."""
    from fedcrypt.testing import InProcessClients, MaliciousServer

    config = SecAggConfig(5, 3)
    full = MaliciousServer(InProcessClients(config, round_id=1))
    full.run()
    inputs = full.endpoints.inputs
    partial = MaliciousServer(InProcessClients(config, inputs=inputs, round_id=2), drops={Stage.ADVERTISE_KEYS: {4}})
    partial.run()
    difference = full.server.result.ring_sum - partial.server.result.ring_sum
    assert (difference == inputs[4]).all()
