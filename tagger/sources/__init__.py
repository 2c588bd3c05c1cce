"""Paths to video files: which paths are videos, the folder walk, mounts, and the watch observer."""
