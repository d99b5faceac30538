"""Every `actlog` error is one line on stderr, never a traceback: a malformed value of any
option of any subcommand exits 2, as does an output file that cannot be written; and
`actlog export -o` never replaces what is there unless told, nor anything that is not a
regular file. Run through the console script's own entry point, against a real storage."""

from __future__ import annotations

import os
import stat

import grpc
import pytest
import safetensors
import typer

from actlog.cli import app, main
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2_grpc
from storage_service.testing import synthetic_record

# Commands that start or download something when their values parse: only values that
# cannot parse are given to them.
STARTS_SOMETHING = {"up", "prepare-model", "verify", "capture", "control-vector"}


def run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    err = capsys.readouterr().err
    return int(exited.value.code or 0), err


def assert_one_line_error(code: int, err: str, args: tuple[str, ...]) -> None:
    assert "Traceback" not in err and "──" not in err, f"{args}: {err}"
    assert code == 2, f"{args}: exit {code}: {err}"
    assert len(err.strip().splitlines()) == 1 and "error:" in err, f"{args}: {err!r}"


NUMERIC_KINDS = {"integer", "float", "integer range", "float range", "int", "float | None"}


def param_kind(param) -> str:
    """The value type's name, from click's ParamType or (typer >= 0.26) typer's own."""
    click_type = getattr(param, "type", None)
    if click_type is not None:
        return getattr(click_type, "name", "")
    return str(param.bare_type()).removesuffix(" | None")


def value_options() -> list[tuple[str, str, str]]:
    """(command, option, kind) of every option that takes an int or float value."""
    found = []
    group = typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag:
                kind = param_kind(param)
                if kind in NUMERIC_KINDS:
                    found.append((name, param.opts[0], kind))
    return found


def test_every_numeric_option_of_every_command_is_checked(capsys) -> None:
    options = value_options()
    assert {"list", "probe", "up"} <= {name for name, _, _ in options}
    for name, option, _ in options:
        bad = ["x", "1.5.5"] if name in STARTS_SOMETHING else ["x", "1.5.5", "9" * 20 + "x"]
        for value in bad:
            args = (name, option, value)
            assert_one_line_error(*run(capsys, *args), args)


def test_times_beyond_64_bits_and_unknown_commands_are_usage_errors(capsys, storage) -> None:
    for args in (
        ("list", "--since-ms", "99999999999999999999", "--storage-addr", storage.address),
        ("list", "--until-ms", "-1", "--storage-addr", storage.address),
        ("list", "--limit", "0", "--storage-addr", storage.address),
        ("no-such-command",),
        ("list", "--no-such-option"),
        ("list", "--filter", "no-equals-sign", "--storage-addr", storage.address),
        ("export-record", "-o", "x.safetensors", "--record-id", "0" * 32, "--layers", "zero"),
        ("export-record", "-o", "x.safetensors", "--record-id", "0" * 32, "--rows", "9:2"),
        ("probe", "--label", "y", "--layers", "zero", "--storage-addr", storage.address),
        ("dataset", "export", "-o", "x", "--layers", "zero", "--storage-addr", storage.address),
    ):
        assert_one_line_error(*run(capsys, *args), args)


@pytest.fixture
def record_id(storage) -> str:
    record = synthetic_record(f"cli errors {new_record_id()}", num_positions=4, hidden_size=8)
    with grpc.insecure_channel(storage.address) as channel:
        storage_pb2_grpc.StorageStub(channel).Ingest(iter(record.requests(4)), timeout=30)
    return record.header.record_id


def test_export_refuses_what_it_must_not_replace(capsys, storage, tmp_path, record_id) -> None:
    export = ("export-record", "--record-id", record_id, "--storage-addr", storage.address)
    target = tmp_path / "a.safetensors"
    assert run(capsys, *export, "-o", str(target))[0] == 0
    written = target.read_bytes()
    # An existing file stays as it was, unless --force.
    code, err = run(capsys, *export, "-o", str(target))
    assert_one_line_error(code, err, ("export", "existing"))
    assert "--force" in err and target.read_bytes() == written
    target.write_bytes(b"old")
    assert run(capsys, *export, "-o", str(target), "--force")[0] == 0
    with safetensors.safe_open(target, framework="numpy") as f:
        assert "token_ids" in list(f.keys())
    # Never anything that is not a regular file, --force or not.
    link = tmp_path / "link.safetensors"
    link.symlink_to(tmp_path / "elsewhere")
    for output in ("", str(tmp_path), "/dev/null", str(link)):
        for force in ((), ("--force",)):
            code, err = run(capsys, *export, "-o", output, *force)
            assert_one_line_error(code, err, ("export-record", "-o", output, *force))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert not list(tmp_path.glob(".*.partial"))
