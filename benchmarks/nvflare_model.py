"""The torch model of the benchmark's FLARE-recipe jobs (``benchmarks.nvflare``): FLARE's PyTorch
persistor needs an ``nn.Module``; this one is a single parameter ``w``, the same flat vector the
fedcrypt jobs average. Its own module, which FLARE ships to the server as ``custom/nvflare_model.py``."""

from __future__ import annotations

import torch


class FlatModel(torch.nn.Module):
    """The recipes' torch model: one parameter ``w`` of ``size`` zeros (FLARE's PT persistor needs a module)."""

    def __init__(self, size: int = 1000) -> None:
        super().__init__()
        self.size = size
        self.w = torch.nn.Parameter(torch.zeros(size))
