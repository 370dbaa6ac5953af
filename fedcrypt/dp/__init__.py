"""Differential privacy: clipping, noise, accounting (extra ``dp``). In progress."""
