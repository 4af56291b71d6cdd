"""The MLflow view: runs, sweeps and the registry's versions and production alias mirrored to an
MLflow tracking server, for teams that compare runs and load models there.

The project's registry stays the source of truth (it has the gate, the decision log and the
compare-and-swap MLflow's registry lacks); MLflow is a faithful copy of it and a second way to load
its models (`models:/mnist@production`). Off unless a tracking URI is given (`--mlflow-uri` or
MLflow's own `MLFLOW_TRACKING_URI`): then nothing of MLflow is imported. Mirroring never fails a run
nor changes the registry: what could not be mirrored is logged, and `sync_registry` (the
`mnist-pipeline registry sync-mlflow` command, and every tracked run) brings MLflow back in step.

    target      where to mirror (URI, experiment, registered model), checked; the client
    run_log     one MLflow run of a flow run or sweep candidate: parameters, curves, test results, gate
    model_sync  registered versions -> MLflow model versions with tags, the `production` alias
"""
