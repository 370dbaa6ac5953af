"""fedcrypt SecAgg+ FedAvg as an NVIDIA FLARE job: the server sees only the sum of the sites'
masked, weighted updates. Run it in FLARE's simulator (``python job.py``), in a local POC
deployment (``python job.py --env poc``), or export the job folder for ``nvflare job submit``
(``python job.py --export DIR``)."""

from __future__ import annotations

import argparse
import os

from fedcrypt.integrations.nvflare import SecAggClient, SecAggServer, recipe

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = os.path.join(HERE, "fedcrypt_example_task.py")


def build(num_clients: int, num_rounds: int) -> object:
    """The job: fedcrypt's server and site objects; the task file goes to the server and every site."""
    server = SecAggServer(
        initial_model="fedcrypt_example_task:initial_model",
        num_rounds=num_rounds,
        neighbours=None if num_clients <= 10 else 8,  # SecAgg+ (sparse masking graph) for larger federations
        threshold=0.67,  # the round completes while at least 2/3 of the sites answer the unmask stage
        clip=8.0,  # |weight / max_weight * value| must stay below this
        max_weight=1000.0,  # the largest weight (number of examples) a site may claim
        stage_timeout=30.0,  # a site that does not answer a stage in time is dropped from the round
    )
    client = SecAggClient(train="fedcrypt_example_task:train", min_clients=2)
    job = recipe("fedcrypt_secagg_example", server, client, min_clients=num_clients)
    job.add_server_file(TASK)
    job.add_client_file(TASK)
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", choices=["sim", "poc"], default="sim")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workspace", default="/tmp/nvflare/fedcrypt_example", help="the simulator's workspace")
    parser.add_argument("--export", metavar="DIR", help="write the job folder to DIR and exit")
    args = parser.parse_args()
    job = build(args.clients, args.rounds)
    if args.export:
        job.export(args.export)
        print(f"job folder: {os.path.join(args.export, 'fedcrypt_secagg_example')}")
        return
    if args.env == "sim":
        from nvflare.recipe import SimEnv

        job.execute(SimEnv(num_clients=args.clients, workspace_root=args.workspace))
        run_dir = os.path.join(args.workspace, "fedcrypt_secagg_example", "server", "simulate_job")
    else:
        from nvflare.recipe import PocEnv

        job.execute(PocEnv(num_clients=args.clients))
        run_dir = "the server's job folder of the POC workspace"
    print(f"final model and round reports: fedcrypt_model.npz, fedcrypt_rounds.json in {run_dir}")


if __name__ == "__main__":
    main()
