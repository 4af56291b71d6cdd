"""The DAGs: Prefect flows that chain the stages of `tasks/`, and their deployments' helpers.
Installed as `mnist_pipeline.flows`."""
