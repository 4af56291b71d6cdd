"""Where things are kept: the artifact store (a folder or an S3-compatible URL) and the paths of a run."""
