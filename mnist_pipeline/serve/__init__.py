"""`mnist-pipeline serve`: the registry's production model over HTTP, and a page to draw digits on.

    app.py          the routes (FastAPI): /v1, the page, /docs (offline), /metrics
    v2.py           the Open Inference Protocol (V2) routes, with the binary tensor extension
    holder.py       the production model, verified, loaded and swapped in as production moves (LiteRT, or Keras)
    batching.py     micro-batching: concurrent requests share one model call
    payloads.py     JSON bodies parsed only when nested no deeper than a valid request
    metrics.py      the Prometheus metrics (one view over several processes)
    workers.py      several service processes on one port (`--workers N`)
    corrections.py  drawings the model got wrong, stored with their right label for training
    static/         the page (plain HTML and JavaScript, no build step, nothing from the network)

No Prefect here: the service reads the registry through `mnist_pipeline.core`.
"""
