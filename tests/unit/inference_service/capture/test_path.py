"""The capture path is chosen before the engine starts: compiled when ENFORCE_EAGER resolves to
compile (machine.py decides `auto`) unless the model or host cannot, with the layers it can
capture fixed and every refusal naming the setting to change."""

from __future__ import annotations

import pytest

from inference_service.capture.path import (
    ADDITIONAL_CONFIG_KEY,
    CaptureConfigError,
    choose_capture_path,
)
from inference_service.errors import StartupError
from inference_service.machine import Choice, Machine, choose_enforce_eager

LLAMA = ["LlamaForCausalLM"]


COMPILE = Choice("false", "ENFORCE_EAGER=false")


def choose(enforce_eager: str | None = None, **kw):
    eager = (
        COMPILE
        if enforce_eager is None
        else Choice(enforce_eager, f"ENFORCE_EAGER={enforce_eager}")
    )
    args = {
        "eager": eager,
        "available_spec": "last",
        "default_spec": "last",
        "architectures": LLAMA,
        "num_layers": 30,
    }
    return choose_capture_path(**{**args, **kw})


def test_a_supported_family_compiles_with_the_last_layer_by_default():
    path = choose()
    assert path.compiled and path.available == (30,)
    assert path.unavailable([30]) == []


def test_enforce_eager_and_unknown_families_use_hooks_and_any_layer():
    assert choose(enforce_eager="true").name == "eager"
    unknown = choose(architectures=["GPT2LMHeadModel"])
    assert unknown.name == "eager" and "GPT2LMHeadModel" in unknown.reason
    assert unknown.unavailable([0, 5, 30]) == []
    assert unknown.additional_config(30, "v1") == {}


@pytest.mark.parametrize(
    ("spec", "available"),
    [("all", tuple(range(31))), ("0,15,-1", (0, 15, 30)), ("recommended", (*range(14, 26), 30))],
)
def test_the_available_set_takes_presets_and_indices(spec, available):
    assert choose(available_spec=spec).available == available


def test_a_request_outside_the_set_is_told_what_to_change():
    path = choose(available_spec="0,-1")
    assert path.unavailable([0, 5, 12, 30]) == [5, 12]
    message = path.refusal([5, 12])
    assert "[5, 12]" in message and "[0, 30]" in message
    assert "CAPTURE_LAYERS_AVAILABLE=0,-1" in message and "ENFORCE_EAGER=true" in message


def test_default_layers_are_always_available_and_bad_specs_fail_before_the_engine_starts():
    assert choose(available_spec="recommended").available == (*range(14, 26), 30)
    assert choose(default_spec="0,-1").available == (0, 30)
    with pytest.raises(CaptureConfigError, match="CAPTURE_LAYERS_AVAILABLE='0,31'") as error:
        choose(available_spec="0,31")
    assert isinstance(error.value, StartupError)  # one line, no traceback
    with pytest.raises(CaptureConfigError, match="CAPTURE_DEFAULT_LAYERS='middle'"):
        choose(default_spec="middle")
    # Eager engines capture anything: the available set is not even read.
    assert choose(enforce_eager="true", available_spec="bogus").name == "eager"


def test_the_compile_cache_key_changes_with_the_capture_configuration():
    """vLLM hashes additional_config into its compile cache key: a graph traced with other
    layers, or by other capture code, must not be loaded."""
    last = choose().additional_config(30, "v1")
    assert last[ADDITIONAL_CONFIG_KEY] == {"layers": [30], "num_layers": 30, "code": "v1"}
    assert choose(available_spec="all").additional_config(30, "v1") != last
    assert choose().additional_config(30, "v2") != last


def test_vllm_hashes_the_capture_configuration_into_its_config_hash():
    from vllm.config import VllmConfig

    def config_hash(extra):
        return VllmConfig(additional_config=extra).compute_hash()

    plain = config_hash({})
    last = config_hash(choose().additional_config(30, "v1"))
    every = config_hash(choose(available_spec="all").additional_config(30, "v1"))
    assert len({plain, last, every}) == 3


def test_a_cpu_host_without_a_compiler_runs_eagerly_and_says_why():
    from inference_service.engine_args import NO_COMPILER

    path = choose(cannot_compile=NO_COMPILER)
    assert path.name == "eager" and "C++ compiler" in path.reason


@pytest.mark.parametrize(
    ("machine", "compiled"), [(Machine("cpu"), False), (Machine("cuda"), True)]
)
def test_auto_runs_eagerly_on_cpu_and_compiles_on_cuda(machine, compiled):
    eager = choose_enforce_eager("auto", machine)
    path = choose_capture_path(
        eager=eager, available_spec="last", default_spec="last", architectures=LLAMA,
        num_layers=30,
    )  # fmt: skip
    assert path.compiled is compiled
    assert path.reason == eager.reason and "ENFORCE_EAGER=auto" in path.reason
