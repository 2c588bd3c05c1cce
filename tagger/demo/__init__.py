"""The `make demo` job (``python -m tagger.demo``) and its synthetic dataset."""
