"""fedcrypt for NVIDIA FLARE 2.9 (extra ``nvflare``): transport only, over the Collab API, which
FLARE 2.9's API guide names for custom integrations (it lists ``ModelController`` among the
APIs to avoid in new projects): a stage is a call of a published site method per site, with
its own payload. :mod:`.secagg` (SecAgg / SecAgg+, distributed DP) and :mod:`.ckks` (CKKS)
move the bytes of the sans-IO cores, which decide everything. Run a job with :func:`recipe`
in one of FLARE's environments (``SimEnv``, ``PocEnv``, ``ProdEnv``)."""

from ._common import MODEL_FILE, REPORT_FILE, RoundReport, model_digest
from .ckks import CkksClient, CkksServer
from .secagg import SecAggClient, SecAggServer

__all__ = ["SecAggServer", "SecAggClient", "CkksServer", "CkksClient", "RoundReport", "recipe", "model_digest",
           "MODEL_FILE", "REPORT_FILE"]


def recipe(job_name: str, server: object, client: object, *, min_clients: int, sync_task_timeout: float = 60) -> object:
    """A ``CollabRecipe`` of a fedcrypt server and site object (fedcrypt's sources are not copied into the job)."""
    from nvflare.collab import CollabRecipe

    job = CollabRecipe(job_name=job_name, server=server, client=client, min_clients=min_clients,
                       sync_task_timeout=sync_task_timeout)
    job._job.set_app_packages(["fedcrypt"])  # the recipe's FedJob (private): the recipe does not forward this
    return job
