"""A hand-written federated loop with secure aggregation: plain PyTorch + fedcrypt.

Five clients fit one linear model to their own data; the server only ever sees the
SecAgg sum of their clipped updates. Run: python examples/torch_secagg_loop.py
"""

import numpy as np
import torch

from fedcrypt.integrations.aggregators import SecAggAggregator
from fedcrypt.integrations.torch import FlatParameters

torch.manual_seed(0)
clients, rounds, clip = 5, 10, 1.0
true_w = torch.tensor([[2.0, -3.0, 0.5]])
datasets = []
for _ in range(clients):  # each client: its own inputs, a shared ground truth
    x = torch.randn(64, 3)
    datasets.append((x, x @ true_w.T + 0.1 * torch.randn(64, 1)))

model = torch.nn.Linear(3, 1)
flat = FlatParameters(model)                          # trainable parameters <-> one vector
aggregator = SecAggAggregator(clients, clip=clip)     # SecAgg, threshold 3 of 5
for round_number in range(rounds):
    global_vector = flat.get()
    updates = []
    for x, y in datasets:                             # local training on each client
        flat.set(global_vector)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        updates.append(flat.update(global_vector, max_norm=clip))
    result = aggregator.aggregate(updates, weights=[len(x) for x, _ in datasets])
    flat.apply(global_vector, result.vector.astype(np.float32))  # w <- w + mean update
    loss = np.mean([torch.nn.functional.mse_loss(model(x), y).item() for x, y in datasets])
    print(f"round {round_number + 1}: loss {loss:.4f}, {result.bytes_up / 1024:.1f} KiB up per client, "
          f"aggregate within {result.error_bound:.1e} of FedAvg")
print("learned", model.weight.data.numpy().round(2), "true", true_w.numpy())
