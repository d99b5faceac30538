"""Representation engineering on the served model: capture activations in-process or through
the stack, contrastive concept pairs, activation statistics, control vectors and how well
they separate a concept.

    from actlog.repe import ControlVector, capture_activations, load_concept, load_model

It reaches the services only through their public APIs (the OpenAI-compatible gateway and
`actlog.StorageClient`). `capture_activations.py` at the repository root keeps the original
tool's command line and imports on top of this package.
"""

from actlog._exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "load_model": "capture",
        "capture_activations": "capture",
        "capture_contrastive_activations": "capture",
        "capture_from_concept": "capture",
        "capture_prompts": "capture",
        "save_activations": "saving",
        "compute_activation_stats": "stats",
        "compute_contrastive_diff": "stats",
        "ContrastPair": "pairs",
        "ContrastDataset": "pairs",
        "load_pairs_file": "pairs",
        "load_concept": "pairs",
        "ControlVector": "control_vector",
        "train_direction": "control_vector",
        "train_directions": "control_vector",
        "ConceptVector": "training",
        "train_concept_vector": "training",
        "write_concept_vector": "training",
        "SeparationReport": "separation",
        "separation_report": "separation",
        "ServedStack": "served",
    },
)
