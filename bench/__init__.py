"""Side-by-side timing benchmarks, each run as ``python -m bench.<name>`` (or
``python bench/<name>.py``); see bench/README.md."""
