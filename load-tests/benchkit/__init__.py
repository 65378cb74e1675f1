"""The benchmark runner behind load-tests/bench.py, one module per concern (see cli.py)."""
