from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_STATUS_UNSPECIFIED: _ClassVar[RecordStatus]
    RECORD_STATUS_PARTIAL: _ClassVar[RecordStatus]
    RECORD_STATUS_COMPLETE: _ClassVar[RecordStatus]

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_LAST_PROMPT: _ClassVar[Pooling]
    POOLING_MEAN_PROMPT: _ClassVar[Pooling]
    POOLING_MEAN_RESPONSE: _ClassVar[Pooling]
    POOLING_LAST_RESPONSE: _ClassVar[Pooling]
    POOLING_POSITION: _ClassVar[Pooling]
RECORD_STATUS_UNSPECIFIED: RecordStatus
RECORD_STATUS_PARTIAL: RecordStatus
RECORD_STATUS_COMPLETE: RecordStatus
POOLING_UNSPECIFIED: Pooling
POOLING_LAST_PROMPT: Pooling
POOLING_MEAN_PROMPT: Pooling
POOLING_MEAN_RESPONSE: Pooling
POOLING_LAST_RESPONSE: Pooling
POOLING_POSITION: Pooling

class RecordHeader(_message.Message):
    __slots__ = ("record_id", "prompt_hash", "prompt", "response", "model", "token_ids", "token_strings", "prompt_length", "sampling_params_json", "layers", "num_positions", "hidden_size", "dtype", "num_layers", "finish_reason", "created_at_ms", "labels", "status", "activation_bytes", "choice_index", "request_id", "compression", "stored_bytes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_STRINGS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHOICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    prompt_hash: str
    prompt: str
    response: str
    model: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    token_strings: _containers.RepeatedScalarFieldContainer[str]
    prompt_length: int
    sampling_params_json: str
    layers: _containers.RepeatedScalarFieldContainer[int]
    num_positions: int
    hidden_size: int
    dtype: str
    num_layers: int
    finish_reason: str
    created_at_ms: int
    labels: _containers.ScalarMap[str, str]
    status: RecordStatus
    activation_bytes: int
    choice_index: int
    request_id: str
    compression: str
    stored_bytes: int
    def __init__(self, record_id: _Optional[str] = ..., prompt_hash: _Optional[str] = ..., prompt: _Optional[str] = ..., response: _Optional[str] = ..., model: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., token_strings: _Optional[_Iterable[str]] = ..., prompt_length: _Optional[int] = ..., sampling_params_json: _Optional[str] = ..., layers: _Optional[_Iterable[int]] = ..., num_positions: _Optional[int] = ..., hidden_size: _Optional[int] = ..., dtype: _Optional[str] = ..., num_layers: _Optional[int] = ..., finish_reason: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., status: _Optional[_Union[RecordStatus, str]] = ..., activation_bytes: _Optional[int] = ..., choice_index: _Optional[int] = ..., request_id: _Optional[str] = ..., compression: _Optional[str] = ..., stored_bytes: _Optional[int] = ...) -> None: ...

class ActivationChunk(_message.Message):
    __slots__ = ("record_id", "sequence", "layer", "row_start", "row_count", "data", "shm_offset")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ROW_START_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHM_OFFSET_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    sequence: int
    layer: int
    row_start: int
    row_count: int
    data: bytes
    shm_offset: int
    def __init__(self, record_id: _Optional[str] = ..., sequence: _Optional[int] = ..., layer: _Optional[int] = ..., row_start: _Optional[int] = ..., row_count: _Optional[int] = ..., data: _Optional[bytes] = ..., shm_offset: _Optional[int] = ...) -> None: ...

class IngestCommit(_message.Message):
    __slots__ = ("record_id", "num_chunks", "sha256")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    num_chunks: int
    sha256: str
    def __init__(self, record_id: _Optional[str] = ..., num_chunks: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("header", "chunk", "commit")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    header: RecordHeader
    chunk: ActivationChunk
    commit: IngestCommit
    def __init__(self, header: _Optional[_Union[RecordHeader, _Mapping]] = ..., chunk: _Optional[_Union[ActivationChunk, _Mapping]] = ..., commit: _Optional[_Union[IngestCommit, _Mapping]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("record_id", "status", "bytes_written")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    status: RecordStatus
    bytes_written: int
    def __init__(self, record_id: _Optional[str] = ..., status: _Optional[_Union[RecordStatus, str]] = ..., bytes_written: _Optional[int] = ...) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class FindByPromptHashRequest(_message.Message):
    __slots__ = ("prompt_hash", "model")
    PROMPT_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    prompt_hash: str
    model: str
    def __init__(self, prompt_hash: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class RecordList(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RecordHeader]
    def __init__(self, records: _Optional[_Iterable[_Union[RecordHeader, _Mapping]]] = ...) -> None: ...

class ListRecordsRequest(_message.Message):
    __slots__ = ("model", "labels", "since_ms", "until_ms", "page_size", "page_token")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model: str
    labels: _containers.ScalarMap[str, str]
    since_ms: int
    until_ms: int
    page_size: int
    page_token: str
    def __init__(self, model: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRecordsResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RecordHeader]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[RecordHeader, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetLabelsRequest(_message.Message):
    __slots__ = ("record_id", "labels", "remove")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    labels: _containers.ScalarMap[str, str]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, record_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRecordRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class DeleteRecordResponse(_message.Message):
    __slots__ = ("record_id", "activation_bytes", "stored_bytes")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    activation_bytes: int
    stored_bytes: int
    def __init__(self, record_id: _Optional[str] = ..., activation_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ...) -> None: ...

class StreamActivationsRequest(_message.Message):
    __slots__ = ("record_id", "layers", "row_start", "row_end", "shm_name", "shm_size")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ROW_START_FIELD_NUMBER: _ClassVar[int]
    ROW_END_FIELD_NUMBER: _ClassVar[int]
    SHM_NAME_FIELD_NUMBER: _ClassVar[int]
    SHM_SIZE_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    layers: _containers.RepeatedScalarFieldContainer[int]
    row_start: int
    row_end: int
    shm_name: str
    shm_size: int
    def __init__(self, record_id: _Optional[str] = ..., layers: _Optional[_Iterable[int]] = ..., row_start: _Optional[int] = ..., row_end: _Optional[int] = ..., shm_name: _Optional[str] = ..., shm_size: _Optional[int] = ...) -> None: ...

class LocalReadReply(_message.Message):
    __slots__ = ("chunks", "failure")
    class Chunk(_message.Message):
        __slots__ = ("layer", "row_start", "row_count", "shm_offset")
        LAYER_FIELD_NUMBER: _ClassVar[int]
        ROW_START_FIELD_NUMBER: _ClassVar[int]
        ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
        SHM_OFFSET_FIELD_NUMBER: _ClassVar[int]
        layer: int
        row_start: int
        row_count: int
        shm_offset: int
        def __init__(self, layer: _Optional[int] = ..., row_start: _Optional[int] = ..., row_count: _Optional[int] = ..., shm_offset: _Optional[int] = ...) -> None: ...
    class Failure(_message.Message):
        __slots__ = ("code", "message", "error_type")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
        code: str
        message: str
        error_type: str
        def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., error_type: _Optional[str] = ...) -> None: ...
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[LocalReadReply.Chunk]
    failure: LocalReadReply.Failure
    def __init__(self, chunks: _Optional[_Iterable[_Union[LocalReadReply.Chunk, _Mapping]]] = ..., failure: _Optional[_Union[LocalReadReply.Failure, _Mapping]] = ...) -> None: ...

class FeaturesRequest(_message.Message):
    __slots__ = ("record_ids", "model", "labels", "since_ms", "until_ms", "layers", "pooling", "position", "skip_unusable")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SKIP_UNUSABLE_FIELD_NUMBER: _ClassVar[int]
    record_ids: _containers.RepeatedScalarFieldContainer[str]
    model: str
    labels: _containers.ScalarMap[str, str]
    since_ms: int
    until_ms: int
    layers: _containers.RepeatedScalarFieldContainer[int]
    pooling: Pooling
    position: int
    skip_unusable: bool
    def __init__(self, record_ids: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., layers: _Optional[_Iterable[int]] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., position: _Optional[int] = ..., skip_unusable: _Optional[bool] = ...) -> None: ...

class FeatureRecord(_message.Message):
    __slots__ = ("record_id", "prompt_hash", "model", "labels", "created_at_ms", "row_start", "row_end")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ROW_START_FIELD_NUMBER: _ClassVar[int]
    ROW_END_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    prompt_hash: str
    model: str
    labels: _containers.ScalarMap[str, str]
    created_at_ms: int
    row_start: int
    row_end: int
    def __init__(self, record_id: _Optional[str] = ..., prompt_hash: _Optional[str] = ..., model: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_at_ms: _Optional[int] = ..., row_start: _Optional[int] = ..., row_end: _Optional[int] = ...) -> None: ...

class LayerFeatures(_message.Message):
    __slots__ = ("layer", "data")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    layer: int
    data: bytes
    def __init__(self, layer: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SkippedRecord(_message.Message):
    __slots__ = ("record_id", "reason")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    reason: str
    def __init__(self, record_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FeaturesBatch(_message.Message):
    __slots__ = ("records", "hidden_size", "layers", "skipped")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[FeatureRecord]
    hidden_size: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerFeatures]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[FeatureRecord, _Mapping]]] = ..., hidden_size: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerFeatures, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedRecord, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("model", "records", "activation_bytes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    model: str
    records: int
    activation_bytes: int
    def __init__(self, model: _Optional[str] = ..., records: _Optional[int] = ..., activation_bytes: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("records", "complete_records", "activation_bytes", "prompt_hashes", "models", "lmdb_used_bytes", "lmdb_map_size", "stored_bytes")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HASHES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LMDB_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LMDB_MAP_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    records: int
    complete_records: int
    activation_bytes: int
    prompt_hashes: int
    models: _containers.RepeatedCompositeFieldContainer[ModelStats]
    lmdb_used_bytes: int
    lmdb_map_size: int
    stored_bytes: int
    def __init__(self, records: _Optional[int] = ..., complete_records: _Optional[int] = ..., activation_bytes: _Optional[int] = ..., prompt_hashes: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelStats, _Mapping]]] = ..., lmdb_used_bytes: _Optional[int] = ..., lmdb_map_size: _Optional[int] = ..., stored_bytes: _Optional[int] = ...) -> None: ...
