"""`mnist-pipeline serve`: the registry's production model over HTTP, and a page to draw digits on.

    app.py          the routes (FastAPI)
    holder.py       the production model, verified, loaded and swapped in as production moves
    batching.py     micro-batching: concurrent requests share one model call
    corrections.py  drawings the model got wrong, stored with their right label for training
    static/         the page (plain HTML and JavaScript, no build step, nothing from the network)

No Prefect here: the service reads the registry through `mnist_pipeline.core`.
"""
