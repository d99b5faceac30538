"""Contrastive concept datasets for control vectors, one `<concept>.jsonl` per concept.

Each line is {"positive": ..., "negative": ...}, the format `--concept-file` reads; `build.py`
writes them (see README.md).
"""
