"""Is activation logging working? One completion through the gateway, its record in storage.

What the original project's `activation_logging/test_lmdb_logging.py` checked, end to end on
a running stack: the gateway answers, names the record of the answer, and storage holds it
with its activations. `actlog verify` and that script run this.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np

from actlog.client import Record, StorageClient
from actlog.errors import ActlogError, WaitTimeoutError

DEFAULT_PROMPT = "The capital of France is"


class VerificationFailed(Exception):
    """Nothing (or not everything) was logged; the message says where it stopped."""


@dataclass(frozen=True)
class Verified:
    record: Record
    shapes: dict[int, tuple[int, ...]]

    def summary(self) -> str:
        r = self.record
        lines = [
            f"record {r.record_id} (prompt hash {r.prompt_hash})",
            f"  prompt:   {r.prompt!r}",
            f"  response: {r.response!r}",
            f"  model:    {r.model}",
            f"  layers:   {list(r.layers)} of {r.num_layers}, {r.dtype}",
            *(f"  layer {layer}: shape {shape}" for layer, shape in self.shapes.items()),
        ]
        return "\n".join(lines)


def _post(url: str, body: dict[str, object], timeout: float) -> dict[str, object]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return json.loads(reply.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        raise VerificationFailed(f"the gateway at {url} answered {error.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise VerificationFailed(f"no gateway at {url}: {reason}") from None


def _served_model(server: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(f"{server}/v1/models", timeout=timeout) as reply:  # noqa: S310
            return json.loads(reply.read())["data"][0]["id"]
    except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError, IndexError) as error:
        raise VerificationFailed(f"no model listed at {server}/v1/models: {error}") from None


def verify(
    server: str,
    storage: str,
    model: str | None = None,
    auth_token: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    timeout: float = 60.0,
    max_tokens: int = 8,
) -> Verified:
    """Send `prompt`, wait for its record, read every stored layer; VerificationFailed if not."""
    server = server.rstrip("/").removesuffix("/v1")
    body: dict[str, object] = {
        "model": model or _served_model(server, timeout),
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "capture": True,
    }
    if auth_token:
        body["auth_token"] = auth_token  # accepted and dropped, as the original's server did
    reply = _post(f"{server}/v1/completions", body, timeout)
    refs = reply.get("activations") or []
    if not refs or not refs[0].get("record_ids"):  # type: ignore[union-attr,index]
        raise VerificationFailed(
            "the gateway answered but named no record: capture is off (CAPTURE_DEFAULT)?"
        )
    record_id = refs[0]["record_ids"][0]  # type: ignore[index]
    with StorageClient(storage, timeout=min(timeout, 10.0)) as client:
        try:
            record = client.wait_for_record_id(record_id, timeout)
        except WaitTimeoutError:
            raise VerificationFailed(
                f"record {record_id} was not stored within {timeout:.0f} s: is storage "
                f"running at {storage}? (the gateway's /health shows the capture pipeline)"
            ) from None
        except ActlogError as error:
            raise VerificationFailed(
                f"record {record_id} could not be read from storage at {storage}: {error.details}"
            ) from None
        arrays = client.get_activations(record, as_float32=False)
    shapes = {layer: tuple(np.shape(array)) for layer, array in arrays.items()}
    return Verified(record, shapes)
