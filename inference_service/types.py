"""Domain types of the inference service and their protobuf conversions.

A type sent as a message names its fields exactly as the message does, so `_as_pb` converts
it field by field without listing them again; tests/unit/inference_service/test_types.py holds each
pair of field lists equal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from google.protobuf.message import Message

from actlog_common.v1 import inference_pb2
from inference_service.errors import InvalidRequest

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 16
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int = 1
    ignore_eos: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    fit_context: bool = False

    @classmethod
    def from_pb(cls, pb: inference_pb2.SamplingParams) -> Sampling:
        def opt(name: str) -> object | None:
            return getattr(pb, name) if pb.HasField(name) else None

        return cls(
            max_tokens=pb.max_tokens,
            temperature=opt("temperature"),  # type: ignore[arg-type]
            top_p=opt("top_p"),  # type: ignore[arg-type]
            top_k=opt("top_k"),  # type: ignore[arg-type]
            stop=tuple(pb.stop),
            seed=opt("seed"),  # type: ignore[arg-type]
            presence_penalty=opt("presence_penalty"),  # type: ignore[arg-type]
            frequency_penalty=opt("frequency_penalty"),  # type: ignore[arg-type]
            n=pb.n or 1,
            ignore_eos=pb.ignore_eos,
            logprobs=opt("logprobs"),  # type: ignore[arg-type]
            prompt_logprobs=opt("prompt_logprobs"),  # type: ignore[arg-type]
            fit_context=pb.fit_context,
        )


@dataclass(frozen=True)
class CaptureRequest:
    enabled: bool | None = None
    layers: tuple[int, ...] = ()
    preset: str = ""
    request_prompts: int = 1
    # The dtype rows are stored in; "" = the server's CAPTURE_DTYPE.
    dtype: str = ""

    @classmethod
    def from_pb(cls, pb: inference_pb2.CaptureOptions) -> CaptureRequest:
        return cls(
            enabled=pb.enabled if pb.HasField("enabled") else None,
            layers=tuple(pb.layers),
            preset=pb.preset,
            request_prompts=max(pb.request_prompts, 1),
            dtype=pb.dtype,
        )


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str | None
    prompt_token_ids: tuple[int, ...] | None
    sampling: Sampling
    capture: CaptureRequest
    request_id: str = ""
    chat: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def from_pb(cls, pb: inference_pb2.GenerateRequest) -> GenerationRequest:
        which = pb.WhichOneof("input")
        if which is None:
            raise InvalidRequest("give a prompt or prompt token ids")
        return cls(
            prompt=pb.prompt if which == "prompt" else None,
            prompt_token_ids=tuple(pb.prompt_token_ids.ids)
            if which == "prompt_token_ids"
            else None,
            sampling=Sampling.from_pb(pb.sampling),
            capture=CaptureRequest.from_pb(pb.capture),
            request_id=pb.request_id,
            chat=tuple((m.role, m.content) for m in pb.chat.messages) if which == "chat" else None,
        )


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float | None
    top: tuple[tuple[int, str, float], ...] = ()

    def to_pb(self) -> inference_pb2.TokenLogprob:
        pb = inference_pb2.TokenLogprob(
            token_id=self.token_id,
            token=self.token,
            top=[
                inference_pb2.TopLogprob(token_id=i, token=t, logprob=lp) for i, t, lp in self.top
            ],
        )
        if self.logprob is not None:
            pb.logprob = self.logprob
        return pb


@dataclass(frozen=True)
class TokenDelta:
    token_ids: tuple[int, ...]
    text: str
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()

    def to_pb(self) -> inference_pb2.GenerateResponse:
        return inference_pb2.GenerateResponse(delta=_as_pb(self, inference_pb2.TokenDelta))


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_token_ids: tuple[int, ...]
    output_token_ids: tuple[int, ...]
    finish_reason: str
    prompt_hash: str
    record_id: str
    layers: tuple[int, ...]
    model: str
    index: int = 0
    prompt: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[TokenLogprob, ...] = ()

    def to_pb(self) -> inference_pb2.GenerateResponse:
        return inference_pb2.GenerateResponse(result=_as_pb(self, inference_pb2.GenerateResult))


@dataclass(frozen=True)
class ModelDescription:
    """The loaded model, as GetModelInfo reports it."""

    model: str
    num_layers: int
    hidden_size: int
    dtype: str
    max_model_len: int
    default_layers: tuple[int, ...]
    recommended_layers: tuple[int, ...]
    kv_cache_bytes: int = 0
    capture_path: str = "eager"
    available_layers: tuple[int, ...] = ()
    dtype_reason: str = ""
    capture_path_reason: str = ""
    # What captures are stored in unless a request says (CAPTURE_DTYPE, resolved).
    capture_dtype: str = ""

    def to_pb(self) -> inference_pb2.ModelInfo:
        return _as_pb(self, inference_pb2.ModelInfo)


def _as_pb(value: Any, message: type[M]) -> M:
    """A dataclass as the message whose fields have the same names; token log-probabilities
    in it convert with their own to_pb."""
    kwargs = {}
    for field in fields(value):
        item = getattr(value, field.name)
        if isinstance(item, tuple) and item and isinstance(item[0], TokenLogprob):
            item = [lp.to_pb() for lp in item]
        kwargs[field.name] = item
    return message(**kwargs)
