"""The Prefect flow that chains the stages in `tasks/`, and its command line."""
