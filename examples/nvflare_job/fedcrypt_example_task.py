"""The model and the local update of the example job: a small PyTorch classifier (a two-layer
perceptron, built from code) trained on each site's own synthetic data (a shared true direction,
a site-specific shift). The job names these functions by string ("fedcrypt_example_task:train")
and ships this file to the server and to every site. Replace them with your own:
``initial_model()`` returns a dict of numpy arrays (a ``state_dict`` converted), ``train(model,
info)`` returns ``(params, weight, metrics)``."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

FEATURES, HIDDEN, CLASSES = 20, 16, 2
EPOCHS, LEARNING_RATE = 10, 0.5


def build_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, CLASSES))


def to_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A model's ``state_dict`` as float32 numpy arrays (what fedcrypt aggregates)."""
    return {name: tensor.detach().cpu().numpy().astype(np.float32) for name, tensor in model.state_dict().items()}


def from_arrays(arrays: dict[str, np.ndarray]) -> torch.nn.Module:
    model = build_model()
    model.load_state_dict({name: torch.from_numpy(np.array(value, np.float32)) for name, value in arrays.items()})
    return model


def initial_model() -> dict[str, np.ndarray]:
    """The server's starting point (seeded, so every run starts from the same weights)."""
    torch.manual_seed(0)
    return to_arrays(build_model())


def site_data(site: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The site's examples (a stand-in for data that never leaves the site)."""
    seed = int.from_bytes(hashlib.sha256(site.encode("utf-8")).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(0).normal(size=FEATURES)
    x = rng.normal(loc=rng.normal(scale=0.5, size=FEATURES), size=(int(rng.integers(50, 200)), FEATURES))
    y = (x @ truth + rng.normal(scale=0.5, size=len(x)) > 0).astype(np.int64)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def train(model: dict[str, np.ndarray], info: dict) -> tuple:
    """A few full-batch SGD epochs from the global model; the weight is the number of examples."""
    torch.set_num_threads(1)  # a model this small trains fastest on one thread, and the run is reproducible
    x, y = site_data(info["site"])
    net = from_arrays(model)
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    for _ in range(EPOCHS):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = net(x)
        metrics = {"loss": float(torch.nn.functional.cross_entropy(logits, y)),
                   "accuracy": float((logits.argmax(dim=1) == y).float().mean())}
    return to_arrays(net), len(x), metrics
