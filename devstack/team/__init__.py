"""Team mode on one machine, for a try: `mnist-pipeline team up`.

Each part of a team's setup runs as a real process on 127.0.0.1, in a folder of its own
(default `artifacts/team`):

    postgres.py       PostgreSQL (initdb, run as the `postgres` user): the Prefect server's database
    object_store.py   moto's S3-compatible server and its bucket: the shared artifact store
    stack.py          the Prefect server on PostgreSQL with authentication, the work pool and limits,
                      the results block, the git-cloned deployment, and two workers, each in a clone
                      of the repository of its own (two "machines"); Ctrl-C stops all of it
    source.py         the deploy-time step that pins the team deployment to a repository and commit
    processes.py      starting, following and stopping those processes by their ids

moto keeps its objects in memory: it stands in for S3 or MinIO in tests and tries, not in production.
Nothing here imports Prefect, TensorFlow or boto3 at module level.
"""

from mnist_pipeline.core.support.errors import PipelineError


class TeamStackError(PipelineError):
    """A part of the team stack could not start or stop; the message names it and its log."""
