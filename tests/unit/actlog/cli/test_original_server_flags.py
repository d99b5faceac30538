"""The original server's command line maps onto the launcher's configuration: each flag to
the setting it names, the rest from the environment; the hub token is taken out of the
arguments; HalluLens' --tested_model matches a served model by its id or its last part."""

from __future__ import annotations

import pytest

from actlog.cli.original_server import parser, stack_config, without_token
from actlog.hallulens.stack_inference import matching_model
from actlog_common.layers import LayerSpec


def config(*argv: str):
    return stack_config(parser().parse_args(list(argv)))


def test_the_defaults_are_the_originals(monkeypatch) -> None:
    for name in ("MODEL", "ACTIVATION_LMDB_PATH", "CAPTURE_DEFAULT_LAYERS", "GATEWAY_PORT"):
        monkeypatch.delenv(name, raising=False)
    c = config()
    assert (c.gateway_host, c.gateway_port, c.model) == ("0.0.0.0", 8000, "default")
    assert c.activation_lmdb_path == "lmdb_data/activations.lmdb"
    assert c.extra_env == {"CAPTURE_DEFAULT_LAYERS": "last"}


def test_each_flag_reaches_its_setting(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STORAGE_PORT", "50999")
    c = config("--model", "org/name", "--host", "127.0.0.1", "--port", "8123",
               "--lmdb_path", "exp1.lmdb", "--target-layers", "second_half",
               "--trim-output-at", "###", "--max-model-len", "2048",
               "--gpu-memory-utilization", "0.5", "--log-file", str(tmp_path / "s.log"),
               "--logprobs-top-k", "5", "--disable-logprobs")  # fmt: skip
    assert (c.model, c.gateway_host, c.gateway_port) == ("org/name", "127.0.0.1", 8123)
    assert c.activation_lmdb_path == "exp1.lmdb" and c.storage_port == 50999
    assert c.log_file == str(tmp_path / "s.log") and c.log_dir is None
    assert c.extra_env == {
        "CAPTURE_DEFAULT_LAYERS": "second_half", "TRIM_OUTPUT_AT": "###",
        "MAX_MODEL_LEN": "2048", "GPU_MEMORY_UTILIZATION": "0.5",
        "ACTIVATION_LOGPROBS_TOPK": "5", "ACTIVATION_LOGPROBS_ENABLED": "false",
    }  # fmt: skip


def test_the_environment_names_the_lmdb_path_as_the_original(monkeypatch) -> None:
    monkeypatch.setenv("ACTIVATION_LMDB_PATH", "lmdb_data/exp1_activations.lmdb")
    assert config().activation_lmdb_path == "lmdb_data/exp1_activations.lmdb"


def test_bad_target_layers_and_unknown_flags_are_argparse_errors(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        config("--target-layers", "middle")
    assert exited.value.code == 2
    assert "error: --target-layers: 'middle' is neither" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["--no-such-flag"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--model", "m", "--auth_token", "hf_x"], ["--auth_token=hf_x", "--model", "m"],
     ["--model", "m", "--auth-token", "hf_x"]],
)  # fmt: skip
def test_the_token_is_taken_out_of_the_arguments(argv) -> None:
    rest, token = without_token(argv)
    assert token == "hf_x" and "hf_x" not in " ".join(rest)
    assert rest == ["--model", "m"]


@pytest.mark.parametrize("argv", [["--auth_token"], ["--auth_token", "--model", "m"]])
def test_a_token_flag_without_a_value_is_left_for_argparse_to_refuse(argv, capsys) -> None:
    rest, token = without_token(argv)
    assert token is None and rest == argv
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(rest)
    assert exited.value.code == 2
    assert "--auth_token/--auth-token: expected one argument" in capsys.readouterr().err


def test_the_halves_split_the_hidden_states() -> None:
    assert LayerSpec.parse("first_half").choose(30) == list(range(0, 15))
    assert LayerSpec.parse("second_half").choose(30) == list(range(15, 31))
    assert LayerSpec.parse("second_half").of_stored(list(range(31)), 30, "r") == list(range(15, 31))


def test_a_tested_model_matches_by_id_or_last_part() -> None:
    served = ["Mistral-7B-Instruct-v0.2"]
    assert matching_model("mistralai/Mistral-7B-Instruct-v0.2", served) == served[0]
    assert matching_model("Mistral-7B-Instruct-v0.2", served) == served[0]
    assert matching_model("mistralai/Mistral-7B-Instruct-v0.2", ["SmolLM2-135M-Instruct"]) is None
