"""One generation request as the engine runs it, and what it leaves: a result per choice and,
per captured choice, its record header.

The header is storage's own RecordHeader message (protos/actlog_common/v1/storage.proto), the
one definition of its fields: built here when the request finishes, completed with
token_strings once the capture's rows are in (off the response path), spooled with the rows
(capture/spool.py) and sent to storage as it is (capture/sink.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from actlog_common.hashing import prompt_hash
from actlog_common.v1 import storage_pb2
from inference_service.logprobs import token_logprobs
from inference_service.types import (
    GenerationRequest,
    GenerationResult,
    ModelDescription,
    TokenDelta,
)


@dataclass
class Choice:
    """One choice's progress: its capture key and record id (empty when not captured), and
    what vLLM has generated for it so far."""

    key: str = ""
    record_id: str = ""
    token_ids: tuple[int, ...] = ()
    text: str = ""
    finish_reason: str | None = None
    logprobs: Any = None


@dataclass
class Generation:
    """A request on its way through vLLM: the prompt as the model sees it, the layers it
    captures (None: capture is off) under `capture_key`, and its choices."""

    req: GenerationRequest
    info: ModelDescription
    request_id: str
    prompt_ids: list[int]
    prompt_text: str
    layers: list[int] | None
    capture_key: str | None
    decode: Callable[[list[int]], str]
    # The dtype the captured rows are stored in (the request's, or CAPTURE_DTYPE resolved).
    capture_dtype: str = ""
    choices: list[Choice] = field(init=False)
    prompt_hash: str = field(init=False)
    prompt_logprobs: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.choices = [Choice() for _ in range(self.req.sampling.n)]
        self.prompt_hash = prompt_hash(self.prompt_text)

    @property
    def max_rows(self) -> int:
        """A capture's worst case: every prompt token and every generated one but the last."""
        return len(self.prompt_ids) + self.req.sampling.max_tokens - 1

    def advance(self, output: Any) -> TokenDelta | None:
        """Take vLLM's cumulative output of one choice; what it adds, if anything."""
        c = self.choices[output.index]
        new_ids = tuple(output.token_ids[len(c.token_ids) :])
        new_text = output.text[len(c.text) :]
        delta = None
        if new_ids or new_text:
            new_logprobs = token_logprobs(
                output.token_ids,
                output.logprobs,
                len(c.token_ids),
                self.req.sampling.logprobs,
                self.decode,
            )
            delta = TokenDelta(new_ids, new_text, output.index, new_logprobs)
        c.token_ids, c.text = tuple(output.token_ids), output.text
        c.finish_reason = output.finish_reason
        c.logprobs = output.logprobs
        return delta

    def result(self, index: int) -> GenerationResult:
        """What the caller gets for choice `index` once generation has finished."""
        c = self.choices[index]
        s = self.req.sampling
        return GenerationResult(
            text=c.text,
            prompt_token_ids=tuple(self.prompt_ids),
            output_token_ids=c.token_ids,
            finish_reason=str(c.finish_reason or ""),
            prompt_hash=self.prompt_hash,
            record_id=c.record_id,
            layers=tuple(self.layers or ()),
            model=self.info.model,
            index=index,
            prompt=self.prompt_text,
            logprobs=token_logprobs(c.token_ids, c.logprobs, 0, s.logprobs, self.decode),
            prompt_logprobs=token_logprobs(
                self.prompt_ids, self.prompt_logprobs, 0, s.prompt_logprobs, self.decode
            ),
        )

    def record_header(self, index: int) -> storage_pb2.RecordHeader:
        """The header of captured choice `index`'s record, all but its token_strings."""
        c = self.choices[index]
        info = self.info
        return storage_pb2.RecordHeader(
            record_id=c.record_id,
            request_id=self.request_id,
            prompt=self.prompt_text,
            prompt_hash=self.prompt_hash,
            response=c.text,
            model=info.model,
            token_ids=[*self.prompt_ids, *c.token_ids],
            prompt_length=len(self.prompt_ids),
            sampling_params_json=json.dumps(asdict(self.req.sampling)),
            layers=self.layers,
            num_positions=len(self.prompt_ids) + len(c.token_ids) - 1,
            hidden_size=info.hidden_size,
            dtype=self.capture_dtype or info.dtype,
            num_layers=info.num_layers,
            finish_reason=str(c.finish_reason or ""),
            created_at_ms=int(time.time() * 1000),
            choice_index=index,
        )
