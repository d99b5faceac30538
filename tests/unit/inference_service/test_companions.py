"""A torchvision that cannot load beside torch stops the inference service with one line that
says how to fix it, before vLLM's import fails deep inside; none installed is fine."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from inference_service.companions import check_companions
from inference_service.errors import StartupError


def test_a_torchvision_that_cannot_load_is_one_line_naming_the_fix(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    with pytest.raises(StartupError) as stopped:
        check_companions()
    message = str(stopped.value)
    assert "\n" not in message
    assert "pip uninstall -y torchvision torchaudio torchcodec" in message


def test_without_torchvision_there_is_nothing_to_check(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    check_companions()
