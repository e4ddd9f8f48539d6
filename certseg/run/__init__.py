"""The run layer: the steps of certify-dataset as plain functions, one module per step.

context   resolve the config and every override once → RunContext
models    load each model once per process (segmenters; denoisers when sampling)
lineage   code version, model files and their sha256
prepare   validate the dataset, probe the segmenters, create the store from its template
health    the base-accuracy health check on held-out images
sample    plan shards; sample a shard's missing blocks into the store
overlays  the overlay figure's data: aggregation's kept maps, targets, photos, classes
finalize  results folder (rows, files, plots) and the MLflow run
recertify a stored run's config, n and health, and the context to certify it again

Each step takes a RunContext (plain, picklable values), so it can run in a Prefect task, a Dask
worker or a test. This package imports no orchestration framework.
"""
