"""Benchmarks and profilers: ``python -m bench NAME [ARGS]`` (``python -m bench`` lists them).

They measure the library from outside: the library packages (``shardformat``, ``preprocess``, ``pipeline``,
``model``, ``training``) never import this package. Results and the command behind each number are in
BENCHMARKS.md; the JSON they write lives in ``bench/results/``.
"""
