"""Features computed in storage: each pooling equals numpy pooling of the full rows read
through get_activations, bit for bit; the selection equals list_records'; bad calls fail
with a clear status or, with skip_unusable, name what they left out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from actlog.client import StorageClient
from actlog.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.testing import SyntheticRecord, synthetic_record
from tests.integration.helpers import ingest

DTYPES = ("bfloat16", "float16", "float32")


def reference(acts: np.ndarray, pooling: str, prompt_length: int, position: int = 0) -> np.ndarray:
    """Pooling written out in numpy from the README's definitions (row p predicts p+1)."""
    n, p = acts.shape[0], prompt_length
    if pooling == "last_prompt":
        return acts[p - 1]
    if pooling == "mean_prompt":
        return acts[:p].mean(axis=0, dtype=np.float64).astype(np.float32)
    if pooling == "mean_response":
        return acts[p - 1 :].mean(axis=0, dtype=np.float64).astype(np.float32)
    if pooling == "last_response":
        return acts[n - 1]
    assert pooling == "position"
    return acts[position]


@pytest.fixture(scope="module")
def client(storage) -> Iterator[StorageClient]:
    with StorageClient(storage.address, timeout=60) as client:
        yield client


def unique(name: str) -> str:
    return f"{name}-{new_record_id()}"


@pytest.fixture(scope="module")
def by_dtype(stub) -> dict[str, list[SyntheticRecord]]:
    """Per dtype, six records of one model with prompts and responses of different lengths,
    each layer cut into chunks of 5 rows so poolings cross chunk boundaries."""
    records: dict[str, list[SyntheticRecord]] = {}
    for d, dtype in enumerate(DTYPES):
        model = unique(f"features-{dtype}")
        records[dtype] = [
            ingest(
                stub,
                synthetic_record(
                    unique("features"),
                    model=model,
                    dtype=dtype,
                    layers=(0, 3, 6),
                    num_layers=6,
                    num_positions=positions,
                    prompt_length=prompt_length,
                    hidden_size=24,
                    seed=10 * d + i,
                    labels={"hallucinated": str(i % 2 == 0).lower(), "i": str(i)},
                ),
            )
            for i, (prompt_length, positions) in enumerate(
                [(1, 1), (3, 3), (4, 17), (11, 12), (7, 30), (9, 9)]
            )
        ]
    return records


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "pooling,position",
    [("last_prompt", 0), ("mean_prompt", 0), ("mean_response", 0), ("last_response", 0),
     ("position", 0), ("position", -1), ("position", 1)],
)  # fmt: skip
def test_each_pooling_equals_numpy_over_get_activations(
    client, by_dtype, dtype: str, pooling: str, position: int
) -> None:
    records = [r for r in by_dtype[dtype] if position < r.header.num_positions]
    ids = [r.header.record_id for r in records]
    feats = client.features(ids, layers=[0, 3, -1], pooling=pooling, position=position)
    assert feats.record_ids == ids
    assert feats.layers == (0, 3, 6)
    assert feats.pooling == pooling
    for layer in (0, 3, 6):
        matrix = feats[layer]
        assert matrix.dtype == np.float32 and matrix.shape == (len(ids), 24)
        for row, record in zip(matrix, records, strict=True):
            acts = client.get_activations(record.header.record_id, layers=[layer])[layer]
            np.testing.assert_array_equal(acts, record.values[layer])  # the stored values
            pos = position if position >= 0 else record.header.num_positions + position
            expected = reference(acts, pooling, record.header.prompt_length, pos)
            assert np.array_equal(row, expected), (record.header.record_id, layer)
    assert feats[-1] is feats[6]
    assert [labels["i"] for labels in feats.labels] == [r.header.labels["i"] for r in records]


def test_rows_pooled_follow_the_positions_convention(client, by_dtype) -> None:
    record = by_dtype["float32"][2]  # prompt 4 tokens, 17 rows: 14 generated tokens
    rid = record.header.record_id
    spans = {p: client.features([rid], layers=0, pooling=p).rows[0]
             for p in ("last_prompt", "mean_prompt", "mean_response", "last_response")}  # fmt: skip
    assert spans == {
        "last_prompt": (3, 4),
        "mean_prompt": (0, 4),
        "mean_response": (3, 17),
        "last_response": (16, 17),
    }
    assert client.features([rid], layers=0, pooling="position", position=-3).rows == [(14, 15)]


def test_filters_select_what_list_records_lists_in_its_order(client, by_dtype) -> None:
    model = by_dtype["bfloat16"][0].header.model
    for labels in (None, {"hallucinated": "true"}, {"hallucinated": "false", "i": "3"}):
        listed = [r.record_id for r in client.iter_records(model=model, labels=labels)]
        feats = client.features(model=model, labels=labels, layers=[6])
        assert feats.record_ids == listed and listed
        assert list(feats.label("hallucinated")) == [
            r.labels["hallucinated"] for r in client.iter_records(model=model, labels=labels)
        ]
    created = sorted(r.header.created_at_ms for r in by_dtype["bfloat16"])
    since = client.features(model=model, since_ms=created[0], until_ms=created[-1] + 1, layers=0)
    assert len(since) == len(by_dtype["bfloat16"])
    assert client.features(model=unique("nobody"), layers=0).record_ids == []


def test_every_layer_of_the_first_record_when_none_are_named(client, by_dtype) -> None:
    ids = [r.header.record_id for r in by_dtype["float16"]]
    feats = client.features(ids)
    assert feats.layers == (0, 3, 6) and feats.hidden_size == 24 and len(feats) == len(ids)


def test_many_records_stream_in_batches_in_order(stub, client) -> None:
    """600 records of 2 x 2048 float32 vectors (9.8 MB) take more than one batch."""
    model = unique("features-many")
    ids = []
    for i in range(600):
        record = synthetic_record(
            unique("many"), model=model, dtype="float32", layers=(1, 2), num_layers=2,
            num_positions=2, prompt_length=2, hidden_size=2048, seed=i,
        )  # fmt: skip
        ingest(stub, record, rows_per_chunk=2)
        ids.append(record.header.record_id)
    request = storage_pb2.FeaturesRequest(model=model, pooling=storage_pb2.POOLING_LAST_PROMPT)
    batches = list(stub.Features(request, timeout=60))
    assert len(batches) >= 2
    assert sum(len(b.records) for b in batches) == 600
    shuffled = list(np.random.default_rng(0).permutation(ids))
    feats = client.features(shuffled, layers=[2], pooling="last_prompt")
    assert feats.record_ids == shuffled and feats[2].shape == (600, 2048)
    first = client.get_activations(shuffled[0], layers=[2])[2]
    np.testing.assert_array_equal(feats[2][0], first[1])


def test_unusable_records_fail_the_call_or_are_skipped_and_named(stub, client, by_dtype) -> None:
    good = by_dtype["bfloat16"][3]
    gid = good.header.record_id
    partial = synthetic_record(unique("partial"), model=good.header.model, seed=99)
    with pytest.raises(grpc.RpcError):
        stub.Ingest(iter(partial.requests(5)[:2]), timeout=30)
    pid = partial.header.record_id
    other = ingest(stub, synthetic_record(unique("other"), hidden_size=8, layers=(0, 3, 6),
                                          num_layers=6, seed=5))  # fmt: skip
    unknown = new_record_id()

    with pytest.raises(NotFoundError, match=unknown):
        client.features([gid, unknown], layers=0)
    with pytest.raises(FailedPreconditionError, match="partial"):
        client.features([gid, pid], layers=0)
    with pytest.raises(InvalidArgumentError, match="layer 5"):
        client.features([gid], layers=5)
    with pytest.raises(InvalidArgumentError, match="hidden size 8"):
        client.features([gid, other.header.record_id], layers=0)
    with pytest.raises(InvalidArgumentError, match="position 40 is outside"):
        client.features([gid], layers=0, pooling="position", position=40)

    feats = client.features([unknown, gid, pid, other.header.record_id], layers=0,
                            skip_unusable=True)  # fmt: skip
    assert feats.record_ids == [gid]
    assert [s.record_id for s in feats.skipped] == [unknown, pid, other.header.record_id]
    assert "partial" in feats.skipped[1].reason and "hidden size" in feats.skipped[2].reason
    # The service stays up and answers the same call the same way.
    assert client.features([gid], layers=0).record_ids == [gid]


def test_malformed_calls_are_invalid_arguments(stub, client, by_dtype) -> None:
    gid = by_dtype["float32"][0].header.record_id
    with pytest.raises(InvalidArgumentError, match="not both"):
        client.features([gid], model="m")
    with pytest.raises(InvalidArgumentError, match="only for pooling position"):
        client.features([gid], pooling="mean_prompt", position=2)
    with pytest.raises(InvalidArgumentError, match="malformed record id"):
        client.features(["nope"], skip_unusable=True)
    with pytest.raises(InvalidArgumentError, match="unknown pooling 'max'"):
        client.features([gid], pooling="max")
    with pytest.raises(InvalidArgumentError, match="empty time range"):
        client.features(since_ms=5, until_ms=5)
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Features(storage_pb2.FeaturesRequest(record_ids=[gid]), timeout=10))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pooling 0 is not one of" in raised.value.details()


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_features_of_compressed_records_equal_numpy_pooling(start_storage, codec: str) -> None:
    storage = start_storage(None, "--storage-compression", codec)
    with grpc.insecure_channel(storage.address) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        records = [
            ingest(stub, synthetic_record(unique(codec), layers=(0, 3), num_layers=3,
                                          num_positions=20, prompt_length=6, seed=i))
            for i in range(3)
        ]  # fmt: skip
    with StorageClient(storage.address) as client:
        ids = [r.header.record_id for r in records]
        assert client.get_record(ids[0]).compression == codec
        for pooling in ("mean_prompt", "last_response"):
            feats = client.features(ids, layers=[3], pooling=pooling)
            for row, record in zip(feats[3], records, strict=True):
                assert np.array_equal(row, reference(record.values[3], pooling, 6))
