"""A captured choice's record header is storage's own RecordHeader message, from the moment
the engine builds it, through the spool's header file (across a restart), to the Ingest
stream: the .proto is the one list of its fields."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from google.protobuf import json_format

from actlog_common.hashing import prompt_hash
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2
from inference_service.capture.sink import ingest_messages
from inference_service.capture.spool import Spool
from inference_service.generation import Generation
from inference_service.types import CaptureRequest, GenerationRequest, ModelDescription, Sampling

HIDDEN = 4
ROW_BYTES = HIDDEN * 2  # bfloat16
# What storage fills in itself (or a client sets later with SetLabels), never the engine.
FILLED_BY_STORAGE = {"labels", "status", "activation_bytes", "compression", "stored_bytes"}
INFO = ModelDescription(
    model="tiny", num_layers=2, hidden_size=HIDDEN, dtype="bfloat16", max_model_len=64,
    default_layers=(2,), recommended_layers=(1,),
)  # fmt: skip


def finished_generation(record_ids: list[str]) -> Generation:
    """A request of two captured choices, as the engine holds it when vLLM has finished."""
    run = Generation(
        req=GenerationRequest(
            prompt="hi there", prompt_token_ids=None,
            sampling=Sampling(max_tokens=3, n=2), capture=CaptureRequest(enabled=True),
            request_id="req-1",
        ),
        info=INFO, request_id="req-1", prompt_ids=[5, 6], prompt_text="hi there",
        layers=[0, 2], capture_key=record_ids[0], decode=lambda ids: f"<{ids[0]}>",
    )  # fmt: skip
    for choice, record_id in zip(run.choices, record_ids, strict=True):
        choice.key, choice.record_id = record_id, record_id
    for index, (ids, text) in enumerate([((7, 8, 9), "a b c"), ((7, 1), "a z")]):
        run.advance(
            SimpleNamespace(index=index, token_ids=ids, text=text, finish_reason="length",
                            logprobs=None)
        )  # fmt: skip
    return run


def spool_it(spool: Spool, header: storage_pb2.RecordHeader) -> bytes:
    """File the header's rows (distinct bytes per layer and row) and finish the record."""
    rows = header.num_positions
    writer = spool.open(header.record_id, list(header.layers), ROW_BYTES, max_rows=rows)
    data = b""
    for layer in header.layers:
        layer_rows = bytes(range(layer * 50, layer * 50 + rows * ROW_BYTES))
        writer.write(layer, 0, layer_rows)
        data += layer_rows
    spool.finish(writer, header)
    return data


def test_the_engine_fills_every_header_field_but_those_storage_fills() -> None:
    run = finished_generation([new_record_id(), new_record_id()])
    header = run.record_header(1)
    header.token_strings.extend(run.decode([t]) for t in header.token_ids)

    every_field = {f.name for f in storage_pb2.RecordHeader.DESCRIPTOR.fields}
    assert {f.name for f, _ in header.ListFields()} == every_field - FILLED_BY_STORAGE
    assert header.record_id == run.choices[1].record_id and header.request_id == "req-1"
    assert (header.prompt, header.prompt_hash) == ("hi there", prompt_hash("hi there"))
    assert (header.response, header.finish_reason, header.choice_index) == ("a z", "length", 1)
    assert list(header.token_ids) == [5, 6, 7, 1] and header.prompt_length == 2
    assert header.num_positions == 3  # every token but the last
    assert list(header.layers) == [0, 2] and header.num_layers == 2
    assert (header.hidden_size, header.dtype, header.model) == (HIDDEN, "bfloat16", "tiny")
    assert json.loads(header.sampling_params_json)["n"] == 2
    assert header.created_at_ms > 0


def test_a_spooled_header_comes_back_as_sent_and_is_what_storage_receives(
    tmp_path: Path,
) -> None:
    run = finished_generation([new_record_id(), new_record_id()])
    header = run.record_header(0)
    header.token_strings.extend(run.decode([t]) for t in header.token_ids)
    data = spool_it(Spool(tmp_path), header)

    restarted = Spool(tmp_path)  # a record finished in the spool survives a restart
    assert restarted.ready() == [header.record_id]
    record = restarted.load(header.record_id)
    assert record.header == header and record.row_bytes == ROW_BYTES

    first, *chunks, commit = ingest_messages(record)
    assert first.header == header
    assert b"".join(m.chunk.data for m in chunks) == data
    assert commit.commit.num_chunks == len(chunks)


def test_the_header_file_names_its_fields_as_the_proto_does(tmp_path: Path) -> None:
    header = finished_generation([new_record_id(), new_record_id()]).record_header(0)
    spool = Spool(tmp_path)
    spool_it(spool, header)

    on_disk = json.loads((tmp_path / header.record_id / "header.json").read_text())
    assert on_disk["row_bytes"] == ROW_BYTES
    assert on_disk["header"]["dtype"] == "bfloat16"
    assert on_disk["header"]["token_ids"] == [5, 6, 7, 8, 9]
    parsed = json_format.ParseDict(on_disk["header"], storage_pb2.RecordHeader())
    assert parsed == header


def test_a_header_spooled_in_the_earlier_flat_shape_is_still_delivered(tmp_path: Path) -> None:
    """Before, header.json held the header's fields and row_bytes in one object."""
    record_id = new_record_id()
    spool = Spool(tmp_path)
    writer = spool.open(record_id, [0], ROW_BYTES, max_rows=2)
    writer.write(0, 0, b"\x01" * 2 * ROW_BYTES)
    writer.close()
    flat = {
        "record_id": record_id, "request_id": "r", "prompt": "p", "prompt_hash": "h",
        "response": "", "model": "tiny", "token_ids": [1, 2, 3], "prompt_length": 2,
        "sampling_params_json": "{}", "layers": [0], "num_positions": 2, "hidden_size": HIDDEN,
        "dtype": "bfloat16", "row_bytes": ROW_BYTES, "num_layers": 1, "finish_reason": "stop",
        "created_at_ms": 1700000000000, "choice_index": 0, "token_strings": ["a", "b", "c"],
    }  # fmt: skip
    (writer.directory / "header.json").write_text(json.dumps(flat))
    writer.directory.rename(tmp_path / record_id)

    record = Spool(tmp_path).load(record_id)
    assert record.row_bytes == ROW_BYTES
    assert record.header.created_at_ms == 1700000000000
    assert list(record.header.token_strings) == ["a", "b", "c"]
    assert record.header.finish_reason == "stop" and record.header.num_positions == 2
