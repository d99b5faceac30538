"""The engine's defaults, chosen for the machine it starts on: the compute dtype and whether
vLLM compiles, each with the reason that `/health` and the `actlog up` banner show.

The rule, from measurements (`benchmarks/defaults.py`, the figures in docs/benchmarks.md):

- **dtype** (`DTYPE=auto`). On CPU, float32 unless the CPU computes bfloat16 natively
  (x86's AVX512_BF16 or AMX-BF16, aarch64's BF16): without them bf16 matmuls are emulated;
  on 2 CPUs without them the default model generated 77.8 tokens/s in bfloat16 against
  205.8 in float32 (2026-12-08). On CUDA, the checkpoint's dtype, as vLLM chooses it.
- **compiled or eager** (`ENFORCE_EAGER=auto`). On CPU, eager: compiling bought 3-14 % of
  throughput there (234.5 against 205.8 tokens/s at best) for 4x the start-up (147 s against
  35 s) and a fixed set of capturable layers, where eager captures any layer. On CUDA,
  compiled with CUDA graphs, whose gain is large.

Kept free of torch and vLLM so that the rule is tested on described machines.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Device = Literal["cpu", "cuda"]

# CPU flags (x86 /proc/cpuinfo "flags", aarch64 "Features") of native bfloat16 arithmetic.
BF16_FLAGS = {"avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX-BF16", "bf16": "BF16"}


@dataclass(frozen=True)
class Machine:
    """What the defaults depend on: the device kind and, on CPU, its instruction set."""

    device: Device
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    cpu_name: str = ""

    @classmethod
    def detect(cls, device: Device, cpuinfo: Path = Path("/proc/cpuinfo")) -> Machine:
        flags: set[str] = set()
        name = platform.processor()
        try:
            for line in cpuinfo.read_text().splitlines():
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("flags", "features"):
                    flags |= set(value.split())
                elif key == "model name" and not name:
                    name = value.strip()
        except OSError:
            pass  # not Linux: no flags known, so no native bf16 assumed
        return cls(device, frozenset(flags), name)

    @property
    def bf16_native(self) -> str:
        """The CPU feature that computes bfloat16 natively, or "" when it has none."""
        return next((label for flag, label in BF16_FLAGS.items() if flag in self.cpu_flags), "")


@dataclass(frozen=True)
class Choice:
    value: str
    reason: str


def choose_dtype(setting: str, machine: Machine) -> Choice:
    """The compute dtype for DTYPE=`setting` (`auto` chooses by the machine)."""
    if setting != "auto":
        return Choice(setting, f"DTYPE={setting}")
    if machine.device != "cpu":
        return Choice("auto", "DTYPE=auto on CUDA: the checkpoint's dtype, as vLLM chooses")
    if native := machine.bf16_native:
        return Choice(
            "bfloat16", f"DTYPE=auto on CPU: this CPU computes bfloat16 natively ({native})"
        )
    return Choice(
        "float32",
        "DTYPE=auto on CPU: no native bfloat16 (AVX512_BF16, AMX-BF16 or BF16), where float32 "
        "is 2-3x faster",
    )


def choose_enforce_eager(setting: str, machine: Machine) -> Choice:
    """ENFORCE_EAGER resolved to `true` or `false` (`auto` chooses by the machine)."""
    if setting != "auto":
        return Choice(setting, f"ENFORCE_EAGER={setting}")
    if machine.device == "cpu":
        return Choice(
            "true",
            "ENFORCE_EAGER=auto on CPU: eager starts in under a minute and captures any layer; "
            "compiling gains about 10 % there for minutes of start-up and a fixed layer set "
            "(ENFORCE_EAGER=false compiles)",
        )
    return Choice("false", "ENFORCE_EAGER=auto on CUDA: compiled with CUDA graphs")
