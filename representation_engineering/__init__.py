"""Representation engineering on the served model: capture activations in-process or through
the stack, concept datasets, activation statistics, control vectors and how well they
separate a concept.

It reaches the services only through their public APIs (the OpenAI-compatible gateway and
`actlog.client.StorageClient`). `capture_activations.py` at the repository root keeps the
original tool's command line and imports on top of this package.
"""
