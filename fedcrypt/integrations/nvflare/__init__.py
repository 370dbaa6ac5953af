"""fedcrypt for NVIDIA FLARE 2.9 (extra ``nvflare``): transport only, over FLARE's Collab API.

FLARE 2.9's API guide lists ``ModelController`` among the APIs to avoid in new projects
("use Collab API") and names the Collab API for server and client side of custom
integrations; a protection's stages are request/response exchanges, which Collab calls are
(a server method calls a published client method by name, per site, with its own payload,
and gets the reply or the failure). :mod:`.secagg` (SecAgg / SecAgg+, with distributed DP)
maps those calls to the bytes of the sans-IO core :mod:`fedcrypt.secagg`; the core decides
everything. Run a job with :func:`recipe` and one of FLARE's environments (``SimEnv``,
``PocEnv``, ``ProdEnv``).
"""

from ._common import MODEL_FILE, REPORT_FILE, RoundReport, model_digest
from .secagg import METHOD, SecAggClient, SecAggServer

__all__ = ["SecAggServer", "SecAggClient", "RoundReport", "recipe", "model_digest", "METHOD", "MODEL_FILE", "REPORT_FILE"]


def recipe(job_name: str, server: object, client: object, *, min_clients: int, sync_task_timeout: float = 60) -> object:
    """A ``CollabRecipe`` of a fedcrypt server and client object. fedcrypt is an installed
    package on every site (an app package): FLARE does not copy its sources into the job."""
    from nvflare.collab import CollabRecipe

    job = CollabRecipe(job_name=job_name, server=server, client=client, min_clients=min_clients,
                       sync_task_timeout=sync_task_timeout)
    fed_job = getattr(job, "_job", None)  # the recipe's FedJob: its set_app_packages is not forwarded by the recipe
    if fed_job is not None:
        fed_job.set_app_packages(["fedcrypt"])
    return job
