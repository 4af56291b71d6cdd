"""What the stages, the flows and the command line share. Nothing here imports Prefect."""
