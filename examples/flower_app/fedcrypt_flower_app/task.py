"""The model and the local training step of the example app.

Two tasks share one interface (``initial_arrays``, ``local_update`` and ``local_loss``):

* ``synthetic``: the model is one float32 vector; a client's "training" moves it half-way
  towards a target derived from its partition id, and its loss is the mean squared distance
  to that target (FedAvg drives the global model to the weighted mean of the targets, so the
  loss falls to the partitions' spread). Deterministic, so a test can recompute plaintext
  FedAvg from the partition ids alone.
* ``lora``: a tiny randomly initialised GPT-2 (the same on every node: the seed is public)
  with a LoRA adapter; only the adapter's tensors travel. Clients train a few steps on
  synthetic token sequences of their partition.

The numpy generators here make non-secret training data only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flwr.app import Array, ArrayRecord


def num_examples(partition_id: int) -> int:
    """The (public) dataset size of a partition: the FedAvg weight of its client."""
    return 10 * (partition_id + 1)


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays -> a Flower ArrayRecord (order kept)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """A Flower ArrayRecord -> named numpy arrays (order kept)."""
    return {name: array.numpy() for name, array in record.items()}


# --------------------------------------------------------------------------- synthetic
def synthetic_initial(model_size: int) -> ArrayRecord:
    """The initial synthetic model: a zero vector split into two tensors."""
    half = model_size // 2
    return to_record({"w": np.zeros(half, dtype=np.float32), "b": np.zeros(model_size - half, dtype=np.float32)})


def synthetic_update(arrays: dict[str, np.ndarray], partition_id: int, server_round: int) -> dict[str, np.ndarray]:
    """One client's new synthetic model: half-way towards its partition's target."""
    out = {}
    for name, value in arrays.items():
        target = _synthetic_targets(arrays, partition_id)[name]
        out[name] = (value + 0.5 * (target - value)).astype(np.float32)
    return out


def _synthetic_targets(arrays: dict[str, np.ndarray], partition_id: int) -> dict[str, np.ndarray]:
    return {
        name: np.random.default_rng([partition_id, index]).uniform(-1.0, 1.0, size=value.shape).astype(np.float32)
        for index, (name, value) in enumerate(sorted(arrays.items()))
    }


def synthetic_loss(arrays: dict[str, np.ndarray], partition_id: int) -> float:
    """The received model's mean squared distance to the partition's target."""
    targets = _synthetic_targets(arrays, partition_id)
    total = sum(float(np.sum((arrays[name].astype(np.float64) - targets[name]) ** 2)) for name in arrays)
    return total / max(1, sum(value.size for value in arrays.values()))


# --------------------------------------------------------------------------- lora
_BASE_SEED = 1234


def _lora_model(rank: int) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(_BASE_SEED)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    base = GPT2LMHeadModel(config)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["c_attn"], lora_dropout=0.0)
    return get_peft_model(base, lora)


def _adapter_state(model: Any) -> dict[str, np.ndarray]:
    from fedcrypt.integrations.peft import lora_state

    return {name: tensor.cpu().numpy().astype(np.float32).copy() for name, tensor in lora_state(model).items()}


def lora_initial(rank: int) -> ArrayRecord:
    """The initial LoRA adapter (B = 0, so the adapted model equals the base model)."""
    return to_record(_adapter_state(_lora_model(rank)))


def _lora_tokens(partition_id: int, server_round: int) -> Any:
    import torch

    rng = np.random.default_rng([partition_id, server_round])
    # each partition prefers its own band of token ids
    low = (partition_id * 8) % 56
    return torch.from_numpy(rng.integers(low, low + 8, size=(4, 16)).astype(np.int64))


def _lora_loaded(arrays: dict[str, np.ndarray], rank: int) -> Any:
    import torch

    from peft import set_peft_model_state_dict

    model = _lora_model(rank)
    set_peft_model_state_dict(model, {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()})
    return model


def lora_loss(arrays: dict[str, np.ndarray], partition_id: int, server_round: int, rank: int) -> float:
    """The received adapter's language-model loss on the partition's tokens of this round."""
    import torch

    model = _lora_loaded(arrays, rank)
    model.eval()
    tokens = _lora_tokens(partition_id, server_round)
    with torch.no_grad():
        return float(model(input_ids=tokens, labels=tokens).loss)


def lora_update(
    arrays: dict[str, np.ndarray], partition_id: int, server_round: int, rank: int, steps: int, lr: float
) -> dict[str, np.ndarray]:
    """Load the global adapter, train ``steps`` SGD steps on the partition's tokens."""
    import torch

    model = _lora_loaded(arrays, rank)
    tokens = _lora_tokens(partition_id, server_round)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimiser.step()
    return _adapter_state(model)


# --------------------------------------------------------------------------- dispatch
def initial_arrays(run_config: dict[str, Any]) -> ArrayRecord:
    """The initial global model for the configured task."""
    if run_config["task"] == "lora":
        return lora_initial(int(run_config["lora-rank"]))
    return synthetic_initial(int(run_config["model-size"]))


def local_update(
    run_config: dict[str, Any], arrays: dict[str, np.ndarray], partition_id: int, server_round: int
) -> dict[str, np.ndarray]:
    """The configured task's local training step."""
    if run_config["task"] == "lora":
        return lora_update(
            arrays,
            partition_id,
            server_round,
            int(run_config["lora-rank"]),
            int(run_config["local-steps"]),
            float(run_config["learning-rate"]),
        )
    return synthetic_update(arrays, partition_id, server_round)


def local_loss(run_config: dict[str, Any], arrays: dict[str, np.ndarray], partition_id: int, server_round: int) -> float:
    """The configured task's loss of the received global model on this client's data."""
    if run_config["task"] == "lora":
        return lora_loss(arrays, partition_id, server_round, int(run_config["lora-rank"]))
    return synthetic_loss(arrays, partition_id)


def ckks_config(run_config: dict[str, Any]) -> Any:
    """The CKKS round's config from the run config: the same on the server and every node.

    The ``compact`` preset for up to 100 uploads with the clip ``ckks-clip``, the weight
    bound ``secagg-max-weight``, ``ckks-decryptors`` decryptors and the key set-up
    ``ckks-key-setup``. A node's roster comes from its own node config, never from here.
    """
    from fedcrypt.he import CkksParams
    from fedcrypt.integrations.flower.ckks import default_config

    params = CkksParams.preset("compact", num_clients=100, clip=float(run_config["ckks-clip"]), max_weight=1.0)
    return default_config(
        params=params,
        max_weight=float(run_config["secagg-max-weight"]),
        decryptors=int(run_config["ckks-decryptors"]),
        key_setup=str(run_config["ckks-key-setup"]),
    )
