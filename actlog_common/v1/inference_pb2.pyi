from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "stop", "seed", "top_k", "presence_penalty", "frequency_penalty", "n", "ignore_eos", "logprobs", "prompt_logprobs", "fit_context")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FIT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    top_k: int
    presence_penalty: float
    frequency_penalty: float
    n: int
    ignore_eos: bool
    logprobs: int
    prompt_logprobs: int
    fit_context: bool
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., top_k: _Optional[int] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ..., n: _Optional[int] = ..., ignore_eos: _Optional[bool] = ..., logprobs: _Optional[int] = ..., prompt_logprobs: _Optional[int] = ..., fit_context: _Optional[bool] = ...) -> None: ...

class CaptureOptions(_message.Message):
    __slots__ = ("enabled", "layers", "preset", "request_prompts", "dtype")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    layers: _containers.RepeatedScalarFieldContainer[int]
    preset: str
    request_prompts: int
    dtype: str
    def __init__(self, enabled: _Optional[bool] = ..., layers: _Optional[_Iterable[int]] = ..., preset: _Optional[str] = ..., request_prompts: _Optional[int] = ..., dtype: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ChatMessages(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "prompt_token_ids", "chat", "sampling", "capture", "request_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    prompt_token_ids: TokenIds
    chat: ChatMessages
    sampling: SamplingParams
    capture: CaptureOptions
    request_id: str
    def __init__(self, prompt: _Optional[str] = ..., prompt_token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., chat: _Optional[_Union[ChatMessages, _Mapping]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., capture: _Optional[_Union[CaptureOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("delta", "result")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    delta: TokenDelta
    result: GenerateResult
    def __init__(self, delta: _Optional[_Union[TokenDelta, _Mapping]] = ..., result: _Optional[_Union[GenerateResult, _Mapping]] = ...) -> None: ...

class TopLogprob(_message.Message):
    __slots__ = ("token_id", "token", "logprob")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    token: str
    logprob: float
    def __init__(self, token_id: _Optional[int] = ..., token: _Optional[str] = ..., logprob: _Optional[float] = ...) -> None: ...

class TokenLogprob(_message.Message):
    __slots__ = ("token_id", "token", "logprob", "top")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    token: str
    logprob: float
    top: _containers.RepeatedCompositeFieldContainer[TopLogprob]
    def __init__(self, token_id: _Optional[int] = ..., token: _Optional[str] = ..., logprob: _Optional[float] = ..., top: _Optional[_Iterable[_Union[TopLogprob, _Mapping]]] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("token_ids", "text", "index", "logprobs")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    index: int
    logprobs: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ..., index: _Optional[int] = ..., logprobs: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ...) -> None: ...

class GenerateResult(_message.Message):
    __slots__ = ("text", "prompt_token_ids", "output_token_ids", "finish_reason", "prompt_hash", "record_id", "layers", "model", "index", "logprobs", "prompt_logprobs", "prompt")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HASH_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    text: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    output_token_ids: _containers.RepeatedScalarFieldContainer[int]
    finish_reason: str
    prompt_hash: str
    record_id: str
    layers: _containers.RepeatedScalarFieldContainer[int]
    model: str
    index: int
    logprobs: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    prompt_logprobs: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    prompt: str
    def __init__(self, text: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., output_token_ids: _Optional[_Iterable[int]] = ..., finish_reason: _Optional[str] = ..., prompt_hash: _Optional[str] = ..., record_id: _Optional[str] = ..., layers: _Optional[_Iterable[int]] = ..., model: _Optional[str] = ..., index: _Optional[int] = ..., logprobs: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ..., prompt_logprobs: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ..., prompt: _Optional[str] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "num_layers", "hidden_size", "dtype", "max_model_len", "default_layers", "recommended_layers", "kv_cache_bytes", "capture_path", "available_layers", "dtype_reason", "capture_path_reason", "capture_dtype")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_LAYERS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_PATH_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_REASON_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_PATH_REASON_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    model: str
    num_layers: int
    hidden_size: int
    dtype: str
    max_model_len: int
    default_layers: _containers.RepeatedScalarFieldContainer[int]
    recommended_layers: _containers.RepeatedScalarFieldContainer[int]
    kv_cache_bytes: int
    capture_path: str
    available_layers: _containers.RepeatedScalarFieldContainer[int]
    dtype_reason: str
    capture_path_reason: str
    capture_dtype: str
    def __init__(self, model: _Optional[str] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., dtype: _Optional[str] = ..., max_model_len: _Optional[int] = ..., default_layers: _Optional[_Iterable[int]] = ..., recommended_layers: _Optional[_Iterable[int]] = ..., kv_cache_bytes: _Optional[int] = ..., capture_path: _Optional[str] = ..., available_layers: _Optional[_Iterable[int]] = ..., dtype_reason: _Optional[str] = ..., capture_path_reason: _Optional[str] = ..., capture_dtype: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("worker_counters",)
    WORKER_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    worker_counters: bool
    def __init__(self, worker_counters: _Optional[bool] = ...) -> None: ...

class WorkerCounters(_message.Message):
    __slots__ = ("steps", "capture_steps", "frames", "layer_hook_calls", "graph_writes")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_STEPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    LAYER_HOOK_CALLS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_WRITES_FIELD_NUMBER: _ClassVar[int]
    steps: int
    capture_steps: int
    frames: int
    layer_hook_calls: int
    graph_writes: int
    def __init__(self, steps: _Optional[int] = ..., capture_steps: _Optional[int] = ..., frames: _Optional[int] = ..., layer_hook_calls: _Optional[int] = ..., graph_writes: _Optional[int] = ...) -> None: ...

class ServiceStatus(_message.Message):
    __slots__ = ("pending_captures", "queued_records", "spool_records", "spool_bytes", "stored_records", "storage_failures", "storage_reachable", "recomputed_rows", "ready", "oldest_spooled_age_s", "spool_max_bytes", "spool_reserved_bytes", "refused_captures", "dead_letter_records", "storage_error", "capture_path", "capture_path_reason", "available_layers", "compile_mode", "compiled_graphs", "worker", "dtype", "dtype_reason", "capture_dtype")
    PENDING_CAPTURES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_RECORDS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTED_ROWS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SPOOLED_AGE_S_FIELD_NUMBER: _ClassVar[int]
    SPOOL_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPOOL_RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    REFUSED_CAPTURES_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_RECORDS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_ERROR_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_PATH_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_PATH_REASON_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    COMPILE_MODE_FIELD_NUMBER: _ClassVar[int]
    COMPILED_GRAPHS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_REASON_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    pending_captures: int
    queued_records: int
    spool_records: int
    spool_bytes: int
    stored_records: int
    storage_failures: int
    storage_reachable: bool
    recomputed_rows: int
    ready: bool
    oldest_spooled_age_s: float
    spool_max_bytes: int
    spool_reserved_bytes: int
    refused_captures: int
    dead_letter_records: int
    storage_error: str
    capture_path: str
    capture_path_reason: str
    available_layers: _containers.RepeatedScalarFieldContainer[int]
    compile_mode: str
    compiled_graphs: int
    worker: WorkerCounters
    dtype: str
    dtype_reason: str
    capture_dtype: str
    def __init__(self, pending_captures: _Optional[int] = ..., queued_records: _Optional[int] = ..., spool_records: _Optional[int] = ..., spool_bytes: _Optional[int] = ..., stored_records: _Optional[int] = ..., storage_failures: _Optional[int] = ..., storage_reachable: _Optional[bool] = ..., recomputed_rows: _Optional[int] = ..., ready: _Optional[bool] = ..., oldest_spooled_age_s: _Optional[float] = ..., spool_max_bytes: _Optional[int] = ..., spool_reserved_bytes: _Optional[int] = ..., refused_captures: _Optional[int] = ..., dead_letter_records: _Optional[int] = ..., storage_error: _Optional[str] = ..., capture_path: _Optional[str] = ..., capture_path_reason: _Optional[str] = ..., available_layers: _Optional[_Iterable[int]] = ..., compile_mode: _Optional[str] = ..., compiled_graphs: _Optional[int] = ..., worker: _Optional[_Union[WorkerCounters, _Mapping]] = ..., dtype: _Optional[str] = ..., dtype_reason: _Optional[str] = ..., capture_dtype: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("record_id", "reason")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    reason: str
    def __init__(self, record_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeadLettersRequest(_message.Message):
    __slots__ = ("retry", "retry_all")
    RETRY_FIELD_NUMBER: _ClassVar[int]
    RETRY_ALL_FIELD_NUMBER: _ClassVar[int]
    retry: _containers.RepeatedScalarFieldContainer[str]
    retry_all: bool
    def __init__(self, retry: _Optional[_Iterable[str]] = ..., retry_all: _Optional[bool] = ...) -> None: ...

class DeadLetterList(_message.Message):
    __slots__ = ("dead_letters", "retried")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    retried: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., retried: _Optional[_Iterable[str]] = ...) -> None: ...
