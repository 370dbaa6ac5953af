"""The site script of the benchmark's FLARE-recipe jobs (``benchmarks.nvflare``: ``flare-fedavg``
and ``flare-he``), written for FLARE's Client API as FLARE's recipes expect: each round it takes
the global model FLARE hands it (decrypted by FLARE's HE filter in ``flare-he``), makes the same
deterministic update as the fedcrypt jobs' sites (:func:`benchmarks.nvflare_job.update_of`) and sends
it with its FedAvg weight as ``NUM_STEPS_CURRENT_ROUND`` (the meta FLARE's aggregators and HE
encryptor weigh by)."""

from __future__ import annotations

import numpy as np
import nvflare.client as flare
import torch
from nvflare.app_common.abstract.fl_model import FLModel

from benchmarks.nvflare_job import update_of, weight_of


def _array(value: object) -> np.ndarray:
    """A parameter as float32 numpy (FLARE hands tensors, arrays, or lists after its HE decryptor)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32).reshape(-1)


def main() -> None:
    flare.init()
    site = flare.get_site_name()
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        model = {name: _array(value) for name, value in received.params.items()}
        update = update_of(site, received.current_round + 1, model)  # FLARE counts rounds from 0, fedcrypt from 1
        flare.send(FLModel(params={name: torch.from_numpy(value) for name, value in update.items()},
                           meta={"NUM_STEPS_CURRENT_ROUND": weight_of(site)}))


main()
