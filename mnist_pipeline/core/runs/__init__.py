"""What one run of the pipeline, or one sweep, returns."""
