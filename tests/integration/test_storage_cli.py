"""`actlog list | label | delete | stats` against a real storage process."""

from __future__ import annotations

import json

import grpc
import safetensors
from typer.testing import CliRunner

from actlog.cli import app
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2_grpc
from storage_service.testing import synthetic_record

runner = CliRunner()


def actlog(storage, *args: str):
    return runner.invoke(app, [*args, "--storage-addr", storage.address])


def test_list_label_delete_stats(storage) -> None:
    model = f"cli-model-{new_record_id()}"
    prompts = [f"cli {i} {new_record_id()}" for i in range(3)]
    records = [synthetic_record(p, model=model, seed=i) for i, p in enumerate(prompts)]
    with grpc.insecure_channel(storage.address) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        for record in records:
            stub.Ingest(iter(record.requests(5)), timeout=30)
    newest, middle, oldest = (r.header.record_id for r in reversed(records))

    result = actlog(storage, "list", "--model", model)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["record_id"] for line in lines] == [newest, middle, oldest]
    assert lines[0]["model"] == model and lines[0]["status"] == "COMPLETE"
    result = actlog(storage, "list", "--model", model, "--limit", "2")
    assert len(result.output.splitlines()) == 2

    result = actlog(storage, "label", middle, "hallucinated=true", "judge=a=b")
    assert result.exit_code == 0, result.output
    labels = json.loads(result.output)["labels"]
    assert labels == {"source": "synthetic", "hallucinated": "true", "judge": "a=b"}
    result = actlog(storage, "label", middle, "--remove", "judge", "--remove", "source")
    assert json.loads(result.output)["labels"] == {"hallucinated": "true"}
    result = actlog(storage, "list", "--filter", "hallucinated=true", "--model", model)
    assert [json.loads(line)["record_id"] for line in result.output.splitlines()] == [middle]
    result = actlog(storage, "list", "--filter", "hallucinated")
    assert result.exit_code != 0 and "key=value" in result.output

    stats = json.loads(actlog(storage, "stats").output)
    assert stats["models"][model] == {"records": 3, "activation_bytes": 3 * 1152}
    result = actlog(storage, "delete", oldest)
    assert result.exit_code == 0 and f"deleted {oldest}" in result.output
    stats = json.loads(actlog(storage, "stats").output)
    assert stats["models"][model]["records"] == 2
    result = actlog(storage, "delete", oldest)
    assert result.exit_code == 1 and "no record with id" in result.output


def test_export_writes_the_chosen_layers_and_rows(storage, tmp_path) -> None:
    record = synthetic_record(f"cli export {new_record_id()}", layers=(0, 2, 4), num_layers=4,
                              num_positions=12, hidden_size=16, seed=7)  # fmt: skip
    with grpc.insecure_channel(storage.address) as channel:
        storage_pb2_grpc.StorageStub(channel).Ingest(iter(record.requests(5)), timeout=30)
    out = tmp_path / "rows.safetensors"
    args = ["export-record", "-o", str(out), "--record-id", record.header.record_id]
    result = actlog(storage, *args, "--layers", "-1,0", "--rows", "2:9")
    assert result.exit_code == 0, result.output
    assert "layers [0, 4], rows 2:9 of 12 positions" in result.output
    with safetensors.safe_open(out, framework="numpy") as f:
        assert set(f.keys()) == {"layer_0", "layer_4", "token_ids"}
        assert f.get_slice("layer_4").get_shape() == [7, 16]
        assert (f.metadata()["row_start"], f.metadata()["row_end"]) == ("2", "9")
    for bad in ("9:2", "x:3", "5"):
        result = actlog(storage, *args, "--rows", bad)
        assert result.exit_code == 2 and "--rows" in result.output, result.output
    result = actlog(storage, *args, "--layers", "zero")
    assert result.exit_code == 2 and "--layers" in result.output
    result = actlog(storage, *args, "--rows", "0:13", "--force")
    assert result.exit_code == 1 and "outside record" in result.output


def test_export_record_takes_the_layer_presets_probe_takes(storage, tmp_path) -> None:
    """`--layers recommended` (and `last`, `all`) mean the same in every command: here, the
    stored layers among those of 45%-85% of depth (4 layers: 2 and 3)."""
    record = synthetic_record(f"cli presets {new_record_id()}", layers=(0, 2, 4), num_layers=4,
                              num_positions=6, hidden_size=8, seed=8)  # fmt: skip
    with grpc.insecure_channel(storage.address) as channel:
        storage_pb2_grpc.StorageStub(channel).Ingest(iter(record.requests(5)), timeout=30)
    base = ["--record-id", record.header.record_id]
    for preset, keys in [("recommended", {"layer_2"}), ("last", {"layer_4"}),
                         ("all", {"layer_0", "layer_2", "layer_4"})]:  # fmt: skip
        out = tmp_path / f"{preset}.safetensors"
        result = actlog(storage, "export-record", *base, "-o", str(out), "--layers", preset)
        assert result.exit_code == 0, result.output
        with safetensors.safe_open(out, framework="numpy") as f:
            assert set(f.keys()) - {"token_ids"} == keys
    # The name it had before `dataset export` existed still works, hidden from --help.
    result = actlog(storage, "export", *base, "-o", str(tmp_path / "old.safetensors"))
    assert result.exit_code == 0, result.output
    assert " export " not in runner.invoke(app, ["--help"]).output


def test_the_same_option_has_the_same_name_in_every_command() -> None:
    """The one grammar: what names a service, a record filter or layers is spelled the same
    wherever a command takes it, and no command spells it another way."""
    import typer.main

    same = {"--storage-addr": "STORAGE_ADDR", "--inference-addr": "INFERENCE_ADDR"}
    retired = {"--storage", "--inference", "--label-filter"}
    seen: dict[str, set[str]] = {}

    def walk(group, prefix: str = "") -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group (typer has its own copy of click)
                walk(command, f"{prefix}{name} ")
                continue
            for param in command.params:
                for opt in param.opts:
                    seen.setdefault(opt, set()).add(prefix + name)
                    assert opt not in retired, f"{prefix}{name} still takes {opt}"
                    if opt in same:
                        assert param.envvar == same[opt], f"{prefix}{name} {opt}"

    walk(typer.main.get_command(app))
    for command in seen["--filter"]:
        assert command in seen["--since-ms"] and command in seen["--model"], command
    # `probe --label` is the label to predict; no command filters by --label.
    assert seen["--label"] == {"probe"}
    assert {"list", "probe", "dataset export"} <= seen["--filter"]
    assert {"export-record", "probe", "dataset export", "capture"} <= seen["--layers"]
