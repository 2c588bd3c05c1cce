"""Where clips go, and cutting them: the clip plan, PyAV decoding, the shared-memory hand-over."""
