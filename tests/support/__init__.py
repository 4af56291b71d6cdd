"""What the tests share, one module a concern (import from the module, e.g. `from support.polling import
wait_until`; tests/ is on sys.path through pytest's rootdir conftest):

- `polling`: `wait_until`, a read repeated up to a deadline, for what settles in its own time;
- `commands`: the entry point and the flow script run as users run them, and what they import;
- `data`: synthetic splits, damaged copies of the bundled MNIST, a split spoiled for one class;
- `training`: train, score and register models, and check what a run wrote;
- `pictures`: digits as PNG files, photographs and bytes;
- `service`: requests the HTTP service must refuse, and its answers against `predict`;
- `servers`: free ports and the processes a test starts (the service, a local Prefect, the team stack);
- `prefect_state`: task runs, logs and artifacts of a flow run, once they have settled;
- `mlflow_server`: a real MLflow server, a relay to cut it off, a team machine registering and syncing.
"""
