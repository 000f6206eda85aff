"""End-to-end demo run by `make demo` (extended as the pipeline, model and train.py land)."""
