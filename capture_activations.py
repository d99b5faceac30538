"""The original `capture_activations.py`, kept at its old name and import path.

    python capture_activations.py --prompt "Tell me a story" --output my_activations
    python capture_activations.py --concept honesty --output honesty_acts --max-samples 10

    from capture_activations import load_model, capture_activations

Everything lives in the `actlog.repe` package; `actlog capture` is the same
command. Add `--server http://127.0.0.1:8000` (or `server=` in the API) to capture through
the running stack instead of in this process.
"""

from actlog.repe.capture import (
    capture_activations,
    capture_contrastive_activations,
    capture_from_concept,
    load_model,
)
from actlog.repe.saving import save_activations
from actlog.repe.stats import compute_activation_stats, compute_contrastive_diff

__all__ = [
    "capture_activations",
    "capture_contrastive_activations",
    "capture_from_concept",
    "compute_activation_stats",
    "compute_contrastive_diff",
    "load_model",
    "save_activations",
]

if __name__ == "__main__":
    from actlog.cli.repe import capture_main

    capture_main()
