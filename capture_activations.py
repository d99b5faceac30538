"""The original `capture_activations.py`, kept at its old name and import path.

    python capture_activations.py --prompt "Tell me a story" --output my_activations
    python capture_activations.py --concept honesty --output honesty_acts --max-samples 10

    from capture_activations import load_model, capture_activations

Everything lives in the `representation_engineering` package; `actlog capture` is the same
command. Add `--server http://127.0.0.1:8000` (or `server=` in the API) to capture through
the running stack instead of in this process.
"""

from representation_engineering.capture import (
    capture_activations,
    capture_contrastive_activations,
    capture_from_concept,
    load_model,
)
from representation_engineering.saving import save_activations
from representation_engineering.stats import compute_activation_stats, compute_contrastive_diff

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
    from representation_engineering.cli import capture_main

    capture_main()
