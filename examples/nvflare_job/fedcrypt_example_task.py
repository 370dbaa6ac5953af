"""The model and the local update of the example job: logistic regression in numpy on each site's
own synthetic data (a shared true direction, a site-specific shift). The job names these
functions by string ("fedcrypt_example_task:train"); the job ships this file to the server
and to every site. Replace them with your own: ``initial_model()`` returns a dict of numpy
arrays, ``train(model, info)`` returns ``(params, weight, metrics)``."""

from __future__ import annotations

import hashlib

import numpy as np

DIM, STEPS, LEARNING_RATE = 20, 10, 0.5


def initial_model() -> dict[str, np.ndarray]:
    return {"w": np.zeros(DIM, np.float32), "b": np.zeros(1, np.float32)}


def site_data(site: str) -> tuple[np.ndarray, np.ndarray]:
    """The site's examples (a stand-in for data that never leaves the site)."""
    seed = int.from_bytes(hashlib.sha256(site.encode("utf-8")).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(0).normal(size=DIM)
    x = rng.normal(loc=rng.normal(scale=0.5, size=DIM), size=(int(rng.integers(50, 200)), DIM))
    y = (x @ truth + rng.normal(scale=0.5, size=len(x)) > 0).astype(np.float64)
    return x, y


def train(model: dict[str, np.ndarray], info: dict) -> tuple:
    """A few full-batch gradient steps from the global model; the weight is the number of examples."""
    x, y = site_data(info["site"])
    w, b = model["w"].astype(np.float64), float(model["b"][0])
    for _ in range(STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        w, b = w - LEARNING_RATE * x.T @ (p - y) / len(x), b - LEARNING_RATE * float(np.mean(p - y))
    p = np.clip(1.0 / (1.0 + np.exp(-(x @ w + b))), 1e-7, 1 - 1e-7)
    metrics = {"loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), "accuracy": float(np.mean((p > 0.5) == y))}
    return {"w": w.astype(np.float32), "b": np.array([b], np.float32)}, len(x), metrics
