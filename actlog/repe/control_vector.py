"""Control vectors: per-layer concept directions trained on contrastive prompt pairs.

The input is, per layer, the hidden state of each prompt's last token, split into the
positive and the negative member of each pair (row k of both arrays is pair k). How the
states were captured (in-process or through the stack) does not matter here.

Layer numbering is this project's everywhere: transformers' `output_hidden_states` indices,
0 = embeddings, i = output of decoder block i (blocks counted from 1), N = the number of
blocks = the final-normed output.

Methods (`train_directions`):

- `mean_diff` (repe's ClusterMeanRepReader): mean(positive) - mean(negative).
- `pca_diff` (repeng's default): first principal component of the per-pair differences
  positive - negative. PCA centers its input, so this is the axis along which the
  differences *vary* most; it finds the concept when its strength varies across pairs, and
  a difference that is the same for every pair is centered away (mean_diff sees that one).
- `pca_center` (repeng): first principal component of every hidden state after subtracting
  its pair's mean, i.e. of +-(positive - negative) / 2.

Every direction is unit-normed float32 and oriented as repeng does: it is flipped when more
pairs have their positive projecting below their negative than above it.

GGUF export (`ControlVector.export_gguf`) writes the control-vector format that llama.cpp's
`--control-vector` and repeng's `ControlVector.import_gguf` read. Both number the slots by
0-based block: repeng's layer id `l` is `hidden_states[l + 1]` and wraps `model.layers[l]`;
llama.cpp adds `direction.k` to the output of block k (0-based, after its residual add).
So our index i is written as `direction.{i-1}`, with these consequences:

- index 0 (embeddings) has no slot: it is skipped, with a warning logged and recorded in the
  export result and the file's `controlvector.actlog.gguf_skipped` key;
- index 1 becomes `direction.0`, which repeng reads but llama.cpp rejects (the whole file
  fails to load: "invalid (zero) direction tensor layer index"), so it is skipped unless
  `keep_block0=True` (for repeng-only users);
- index N (the final-normed state in our capture) becomes `direction.{N-1}`, which llama.cpp
  adds to block N-1's output *before* the final norm: the direction was measured after the
  norm but is applied before it. It is still exported; a note is logged when the metadata
  names the block count (`num_layers`).

Directions stay unit-norm in the file; the strength is the user's (`--control-vector-scaled
FILE S` in llama.cpp, the coefficient in repeng). Extra provenance goes in string keys under
`controlvector.actlog.*`, which llama.cpp ignores.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import gguf
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.decomposition import PCA
from tqdm import tqdm

logger = logging.getLogger(__name__)

Method = Literal["mean_diff", "pca_diff", "pca_center"]
METHODS: tuple[str, ...] = get_args(Method)

# One layer's contrastive states: (positive (n, hidden), negative (n, hidden)), row k = pair k.
PairHiddens = tuple[np.ndarray, np.ndarray]

TENSOR_PREFIX = "direction."
GGUF_ARCH = "controlvector"
GGUF_ACTLOG_PREFIX = f"{GGUF_ARCH}.actlog."
LAYER_NUMBERING = (
    "transformers output_hidden_states: 0 = embeddings, i = output of decoder block i "
    "(1-based), N = final-normed output"
)


def _check_pairs(positive: np.ndarray, negative: np.ndarray) -> None:
    if positive.ndim != 2 or positive.shape != negative.shape:
        raise ValueError(
            "positive and negative must both be (n_pairs, hidden), got "
            f"{positive.shape} and {negative.shape}"
        )
    if positive.shape[0] < 1:
        raise ValueError("no pairs")
    if not (np.isfinite(positive).all() and np.isfinite(negative).all()):
        raise ValueError("hidden states contain NaN or inf")


def project_onto_direction(hiddens: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Scalar projection of each row of `hiddens` on `direction` (repeng's
    project_onto_direction): `hiddens @ direction / |direction|`."""
    norm = float(np.linalg.norm(direction))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"direction norm must be finite and non-zero, got {norm}")
    return np.asarray(hiddens, dtype=np.float64) @ np.asarray(direction, np.float64) / norm


def project_pairs(
    positive: np.ndarray, negative: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Projections of the positive and of the negative members of each pair."""
    return project_onto_direction(positive, direction), project_onto_direction(negative, direction)


def project_layers(
    hiddens: Mapping[int, PairHiddens], directions: Mapping[int, np.ndarray]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per layer present in both, the (positive, negative) projections on that layer's
    direction."""
    return {
        layer: project_pairs(*hiddens[layer], directions[layer])
        for layer in sorted(hiddens.keys() & directions.keys())
    }


def orient_direction(
    direction: np.ndarray, positive: np.ndarray, negative: np.ndarray
) -> np.ndarray:
    """`direction` or its negation, whichever has more pairs' positive projecting above their
    negative (repeng's rule: flip only when "below" strictly outnumbers "above"; ties count as
    neither)."""
    pos, neg = project_pairs(positive, negative, direction)
    if np.mean(pos < neg) > np.mean(pos > neg):
        return -direction
    return direction


def _first_component(train: np.ndarray) -> np.ndarray:
    # random_state only matters when sklearn picks its randomized solver (large hidden sizes);
    # fixing it makes the same inputs give the same direction.
    pca = PCA(n_components=1, whiten=False, random_state=0).fit(train)
    return pca.components_[0]


def train_direction(positive: np.ndarray, negative: np.ndarray, method: Method) -> np.ndarray:
    """One layer's unit-norm float32 direction from its (n, hidden) positive and negative
    states, oriented so that positives project higher (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    # float64 for the fit: float32 sums over many pairs lose digits that PCA then amplifies.
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    _check_pairs(pos, neg)
    if method == "mean_diff":
        direction = pos.mean(axis=0) - neg.mean(axis=0)
    elif method == "pca_diff":
        if pos.shape[0] < 2:
            raise ValueError("pca_diff needs at least 2 pairs (PCA centers the differences)")
        direction = _first_component(pos - neg)
    else:
        center = (pos + neg) / 2
        direction = _first_component(np.concatenate([pos - center, neg - center]))
    norm = float(np.linalg.norm(direction))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(
            f"{method}: the pairs give no direction (norm {norm}); are positive and negative "
            "states identical?"
        )
    direction = orient_direction(direction / norm, pos, neg)
    return direction.astype(np.float32)


def train_directions(
    hiddens: Mapping[int, PairHiddens], method: Method, *, progress: bool = False
) -> dict[int, np.ndarray]:
    """Per layer, the direction `train_direction` gives for that layer's pairs."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    directions = {}
    for layer in tqdm(sorted(hiddens), desc=f"train {method}", disable=not progress):
        try:
            directions[layer] = train_direction(*hiddens[layer], method)
        except ValueError as error:
            raise ValueError(f"layer {layer}: {error}") from error
    return directions


def make_metadata(
    *,
    model: str,
    method: str,
    layers: Iterable[int],
    hidden_size: int,
    dataset_name: str,
    dataset_sha256: str,
    model_type: str | None = None,
    num_layers: int | None = None,
    position: str = "last token",
    record_ids: Sequence[str] | None = None,
    created_at: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """A control vector's provenance as the string map safetensors and GGUF headers hold.

    `model_type` is transformers' `config.model_type` (the GGUF model hint); `num_layers` the
    number of decoder blocks; `record_ids` the stored records the states came from when they
    were captured through the stack. Lists are JSON strings; `created_at` defaults to now
    (UTC, ISO 8601).
    """
    metadata = {
        "model": model,
        "method": method,
        "layers": json.dumps(sorted(int(layer) for layer in layers)),
        "hidden_size": str(int(hidden_size)),
        "dataset_name": dataset_name,
        "dataset_sha256": dataset_sha256,
        "position": position,
        "layer_numbering": LAYER_NUMBERING,
        "created_at": created_at or datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if model_type is not None:
        metadata["model_type"] = model_type
    if num_layers is not None:
        metadata["num_layers"] = str(int(num_layers))
    if record_ids is not None:
        metadata["record_ids"] = json.dumps(list(record_ids))
    metadata.update(extra)
    return metadata


def _layer_of(name: str, prefix: str = TENSOR_PREFIX) -> int:
    suffix = name[len(prefix) :] if name.startswith(prefix) else ""
    if not suffix.isdigit():
        raise ValueError(f"tensor {name!r} is not named {prefix}<layer index>")
    return int(suffix)


@dataclass(frozen=True)
class GGUFExport:
    """What `ControlVector.export_gguf` wrote: our layer index -> tensor name for each
    written direction, our index -> reason for each skipped one, and notes on written ones."""

    path: Path
    written: dict[int, str]
    skipped: dict[int, str]
    notes: dict[int, str]


@dataclass
class ControlVector:
    """Unit directions by our layer index, with string provenance (see `make_metadata`)."""

    directions: dict[int, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValueError("a control vector needs at least one direction")
        sizes = set()
        checked = {}
        for layer, direction in self.directions.items():
            if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or layer < 0:
                raise ValueError(f"layer indices are non-negative integers, got {layer!r}")
            vector = np.asarray(direction, dtype=np.float32)
            if vector.ndim != 1 or not np.isfinite(vector).all():
                raise ValueError(f"layer {layer}: a direction is a finite 1-D vector")
            sizes.add(vector.shape[0])
            checked[int(layer)] = vector
        if len(sizes) != 1:
            raise ValueError(f"directions have different sizes: {sorted(sizes)}")
        bad = {k: type(v).__name__ for k, v in self.metadata.items() if not isinstance(v, str)}
        if bad:
            raise TypeError(f"metadata values must be strings (headers hold strings): {bad}")
        self.directions = dict(sorted(checked.items()))

    @property
    def hidden_size(self) -> int:
        return next(iter(self.directions.values())).shape[0]

    def save_safetensors(self, path: str | Path) -> None:
        """Tensors `direction.<our layer index>` (float32) with the metadata in the header."""
        tensors = {
            f"{TENSOR_PREFIX}{k}": np.ascontiguousarray(v) for k, v in self.directions.items()
        }
        save_file(tensors, str(path), metadata=dict(self.metadata))

    @classmethod
    def load_safetensors(cls, path: str | Path) -> ControlVector:
        """The control vector `save_safetensors` wrote."""
        with safe_open(str(path), framework="np") as handle:
            metadata = dict(handle.metadata() or {})
            names = handle.keys()
            directions = {_layer_of(name): handle.get_tensor(name) for name in names}
        return cls(directions=directions, metadata=metadata)

    def export_gguf(
        self, path: str | Path, *, model_hint: str | None = None, keep_block0: bool = False
    ) -> GGUFExport:
        """Write the llama.cpp / repeng control-vector GGUF (layer mapping: module docstring).

        `model_hint` (transformers' model_type, e.g. "llama") defaults to the metadata's
        `model_type`; repeng refuses a file without one. Raises ValueError when no direction
        has a slot.
        """
        hint = model_hint or self.metadata.get("model_type")
        if not hint:
            raise ValueError("a GGUF control vector needs a model hint (model_type)")
        num_layers = self.metadata.get("num_layers")
        written: dict[int, str] = {}
        skipped: dict[int, str] = {}
        notes: dict[int, str] = {}
        for layer in self.directions:
            if layer == 0:
                skipped[0] = "embeddings (index 0) have no control-vector slot"
            elif layer == 1 and not keep_block0:
                skipped[1] = "would be direction.0, which llama.cpp rejects (keep_block0 keeps it)"
            else:
                written[layer] = f"{TENSOR_PREFIX}{layer - 1}"
                if num_layers is not None and layer == int(num_layers):
                    notes[layer] = (
                        f"final-normed state exported as {written[layer]}: llama.cpp adds it to "
                        f"block {layer - 1}'s output before the final norm"
                    )
        for layer, reason in skipped.items():
            logger.warning("GGUF export skips layer %d: %s", layer, reason)
        for note in notes.values():
            logger.warning("GGUF export: %s", note)
        if not written:
            raise ValueError(f"no direction has a GGUF slot: {skipped}")

        kv = {f"{GGUF_ACTLOG_PREFIX}{k}": v for k, v in self.metadata.items()}
        kv[f"{GGUF_ACTLOG_PREFIX}gguf_layer_map"] = json.dumps(
            {str(k): v for k, v in written.items()}
        )
        kv[f"{GGUF_ACTLOG_PREFIX}gguf_skipped"] = json.dumps(
            {str(k): v for k, v in skipped.items()}
        )
        kv[f"{GGUF_ACTLOG_PREFIX}gguf_notes"] = json.dumps({str(k): v for k, v in notes.items()})

        writer = gguf.GGUFWriter(str(path), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", hint)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(written))
        for key, value in kv.items():
            writer.add_string(key, value)
        for layer, name in written.items():
            writer.add_tensor(name, self.directions[layer])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return GGUFExport(Path(path), written, skipped, notes)

    @classmethod
    def import_gguf(cls, path: str | Path) -> ControlVector:
        """A control-vector GGUF (ours, repeng's or llama.cpp's) under our indices:
        `direction.k` becomes index k+1. `controlvector.actlog.*` keys come back as metadata
        without the prefix (their `layers` names the layers trained, `gguf_layer_map` those
        written); the model hint, the model the file targets, is `metadata["model_type"]`."""
        reader = gguf.GGUFReader(str(path))
        arch = _gguf_string(reader, "general.architecture")
        if arch != GGUF_ARCH:
            raise ValueError(f"{path} is not a control vector (architecture {arch!r})")
        metadata = {}
        for name in reader.fields:
            value = _gguf_string(reader, name) if name.startswith(GGUF_ACTLOG_PREFIX) else None
            if value is not None:
                metadata[name[len(GGUF_ACTLOG_PREFIX) :]] = value
        hint = _gguf_string(reader, f"{GGUF_ARCH}.model_hint")
        if hint is not None:
            metadata["model_type"] = hint
        directions = {}
        for tensor in reader.tensors:
            if not tensor.name.startswith(TENSOR_PREFIX):
                continue
            if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
                raise ValueError(f"{tensor.name}: a direction is a 1-D float32 tensor")
            our = _layer_of(tensor.name) + 1
            # The reader maps the file; copy so the vector outlives it.
            directions[our] = np.array(tensor.data, dtype=np.float32).reshape(-1)
        return cls(directions=directions, metadata=metadata)


def _gguf_string(reader: gguf.GGUFReader, key: str) -> str | None:
    field_ = reader.get_field(key)
    if field_ is None or not field_.data or field_.types != [gguf.GGUFValueType.STRING]:
        return None
    return bytes(field_.parts[field_.data[0]]).decode("utf-8", errors="replace")


load_safetensors = ControlVector.load_safetensors
import_gguf = ControlVector.import_gguf
