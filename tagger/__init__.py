"""vidtag: tag videos with what happens in them, using VideoMAE over the whole video."""

__version__ = "0.1.0"
