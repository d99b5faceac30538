"""The engine's defaults on described machines: float32 on a CPU without native bfloat16,
bfloat16 on one with it, the checkpoint's dtype on CUDA; eager on CPU, compiled on CUDA; an
explicit setting always wins, and every choice says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_service.machine import Machine, choose_dtype, choose_enforce_eager

# Flags as /proc/cpuinfo lists them (trimmed).
PLAIN_AVX512 = frozenset(["fpu", "sse2", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni"])
SAPPHIRE_RAPIDS = PLAIN_AVX512 | {"avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
COOPER_LAKE = PLAIN_AVX512 | {"avx512_bf16"}
GRAVITON3 = frozenset(["fp", "asimd", "bf16", "sve", "i8mm"])


def cpu(flags: frozenset[str]) -> Machine:
    return Machine("cpu", flags)


def test_a_cpu_without_native_bf16_computes_in_float32() -> None:
    choice = choose_dtype("auto", cpu(PLAIN_AVX512))
    assert choice.value == "float32"
    assert "no native bfloat16" in choice.reason and "DTYPE=auto" in choice.reason


@pytest.mark.parametrize(
    ("flags", "feature"),
    [(SAPPHIRE_RAPIDS, "AVX512_BF16"), (COOPER_LAKE, "AVX512_BF16"), (GRAVITON3, "BF16")],
)
def test_a_cpu_with_native_bf16_computes_in_bfloat16(flags, feature) -> None:
    choice = choose_dtype("auto", cpu(flags))
    assert choice.value == "bfloat16"
    assert feature in choice.reason


def test_cuda_keeps_the_checkpoints_dtype_and_compiles() -> None:
    gpu = Machine("cuda")
    assert choose_dtype("auto", gpu).value == "auto"
    eager = choose_enforce_eager("auto", gpu)
    assert eager.value == "false" and "CUDA graphs" in eager.reason


@pytest.mark.parametrize("flags", [PLAIN_AVX512, SAPPHIRE_RAPIDS])
def test_cpu_runs_eagerly_so_any_layer_can_be_captured(flags) -> None:
    choice = choose_enforce_eager("auto", cpu(flags))
    assert choice.value == "true"
    assert "any layer" in choice.reason


@pytest.mark.parametrize("machine", [cpu(PLAIN_AVX512), cpu(SAPPHIRE_RAPIDS), Machine("cuda")])
def test_an_explicit_setting_wins_on_every_machine(machine) -> None:
    assert choose_dtype("bfloat16", machine).value == "bfloat16"
    assert choose_dtype("float16", machine).value == "float16"
    assert choose_dtype("float32", machine).reason == "DTYPE=float32"
    assert choose_enforce_eager("false", machine).value == "false"
    assert choose_enforce_eager("true", machine).reason == "ENFORCE_EAGER=true"


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Example CPU\nflags\t\t: fpu avx512f amx_bf16\n\n"
        "processor\t: 1\nmodel name\t: Example CPU\nflags\t\t: fpu avx512f amx_bf16\n"
    )
    machine = Machine.detect("cpu", cpuinfo)
    assert machine.bf16_native == "AMX-BF16"
    assert Machine.detect("cpu", tmp_path / "missing").bf16_native == ""
