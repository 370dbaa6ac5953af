"""A Flower app for federated LoRA fine-tuning with fedcrypt secure aggregation."""
