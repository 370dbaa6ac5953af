"""Adapters to PEFT/LoRA, plain PyTorch and Flower. They translate; they hold no cryptography."""
