"""`make bench`: the gateway's overhead against a zero-latency mock upstream.

Self-contained: it starts its own mock upstream (mock.py), sets up a throwaway database, applies a
tenant YAML, starts the gateway under granian as `make serve` would, drives load with wrk (or the
asyncio driver in pydriver.py when wrk is missing) and prints a markdown table. Nothing here is a
pytest module: timing tests would be flaky, so no file in this folder is named test_*.py.

Run: `make bench` or `make bench BENCH_ARGS="--quick"`; see `python -m tests.bench --help`.
"""
