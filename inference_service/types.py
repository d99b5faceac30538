"""Domain types of the inference service and their protobuf conversions."""

from __future__ import annotations

from dataclasses import dataclass

from actlog_common.v1 import inference_pb2
from inference_service.errors import InvalidRequest


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

    @classmethod
    def from_pb(cls, pb: inference_pb2.CaptureOptions) -> CaptureRequest:
        return cls(
            enabled=pb.enabled if pb.HasField("enabled") else None,
            layers=tuple(pb.layers),
            preset=pb.preset,
            request_prompts=max(pb.request_prompts, 1),
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
        return inference_pb2.GenerateResponse(
            delta=inference_pb2.TokenDelta(
                token_ids=self.token_ids,
                text=self.text,
                index=self.index,
                logprobs=[lp.to_pb() for lp in self.logprobs],
            )
        )


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
        return inference_pb2.GenerateResponse(
            result=inference_pb2.GenerateResult(
                index=self.index,
                prompt=self.prompt,
                logprobs=[lp.to_pb() for lp in self.logprobs],
                prompt_logprobs=[lp.to_pb() for lp in self.prompt_logprobs],
                text=self.text,
                prompt_token_ids=self.prompt_token_ids,
                output_token_ids=self.output_token_ids,
                finish_reason=self.finish_reason,
                prompt_hash=self.prompt_hash,
                record_id=self.record_id,
                layers=self.layers,
                model=self.model,
            )
        )
