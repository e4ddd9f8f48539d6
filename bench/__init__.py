"""Benchmarks, run as modules (`python -m bench.bench_certify`); the package never imports them."""
