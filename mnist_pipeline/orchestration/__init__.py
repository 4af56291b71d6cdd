"""Prefect glue the stages and flows share: the retry predicate, where task results are kept, and the
deployment steps prefect.yaml calls. The only package below `tasks`/`flows` that imports Prefect."""
