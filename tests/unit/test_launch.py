"""How `speechgpt train ...` starts several processes: the launcher command lines and the CLI flags behind them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from speechgpt import cli
from speechgpt.training import launch as launch_module
from speechgpt.training.launch import LaunchConfig, launch_command, launcher_path

BIN = Path(sys.executable).parent


def test_torchrun_on_one_machine() -> None:
    command = launch_command(["train", "stage2", "x=1"], LaunchConfig(nproc=2))
    assert command[0] == str(BIN / "torchrun")
    assert command[1] == "--nproc_per_node=2" and command[2].startswith("--master_port=")
    assert command[3:] == ["-m", "speechgpt.cli", "train", "stage2", "x=1"]


def test_torchrun_multinode_is_the_same_command_on_every_machine_but_the_rank() -> None:
    commands = [
        launch_command(["train", "stage1"], LaunchConfig(nproc=8, nnodes=2, node_rank=rank, master_addr="node0"))
        for rank in (0, 1)
    ]
    assert commands[1] == [
        str(BIN / "torchrun"),
        "--nproc_per_node=8",
        "--nnodes=2",
        "--node_rank=1",
        "--master_addr=node0",
        "--master_port=29500",  # the same on every machine: a random free port would differ
        "-m",
        "speechgpt.cli",
        "train",
        "stage1",
    ]
    assert [a for a in commands[0] if "node_rank" not in a] == [a for a in commands[1] if "node_rank" not in a]
    custom = LaunchConfig(nnodes=3, node_rank=2, master_addr="10.0.0.1", master_port=6000)
    assert "--master_port=6000" in launch_command([], custom)


def test_deepspeed_launcher_is_found_beside_python_not_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    command = launch_command(["train", "stage3"], LaunchConfig(nproc=4, hostfile="hosts"))
    assert command == [
        str(BIN / "deepspeed"),
        "--hostfile",
        "hosts",
        "--num_gpus",
        "4",
        "--module",
        "speechgpt.cli",
        "train",
        "stage3",
    ]
    assert Path(command[0]).is_file()


def test_a_missing_launcher_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(launch_module.sys, "executable", str(tmp_path / "bin" / "python"))
    with pytest.raises(FileNotFoundError, match=r"deepspeed is not installed beside .*pip install deepspeed"):
        launcher_path("deepspeed")
    with pytest.raises(FileNotFoundError, match=r"torchrun .*pip install torch$"):
        launch_command([], LaunchConfig(nproc=2))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nproc": 0}, "at least 1"),
        ({"nnodes": 2}, "needs master_addr"),
        ({"nnodes": 2, "node_rank": 2, "master_addr": "h"}, r"node_rank must be in 0\.\.1"),
        ({"node_rank": -1}, "node_rank"),
        ({"nnodes": 2, "master_addr": "h", "hostfile": "f"}, "either a hostfile"),
        ({"master_port": 70000}, "master_port"),
    ],
)
def test_launch_config_is_validated(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LaunchConfig(**fields)


def test_only_several_processes_relaunch() -> None:
    assert not LaunchConfig().is_distributed
    assert LaunchConfig(nproc=2).is_distributed
    assert LaunchConfig(nnodes=2, master_addr="h").is_distributed
    assert LaunchConfig(hostfile="h").is_distributed


KEYS = ["model=m", "data=d", "out=o"]  # a valid stage-2 config; the launcher is replaced, nothing runs


def test_cli_hands_the_multinode_flags_to_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], LaunchConfig]] = []
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(cli, "relaunch", lambda argv, launch: calls.append((argv, launch)) or 0)
    args = ["train", "stage2", "--nproc", "2", "--nnodes=2", "--node-rank", "1", "--master-addr", "h"]
    assert cli.main([*args, "--master-port=6000", *KEYS]) == 0
    argv, launch = calls[0]
    assert argv == ["train", "stage2", *KEYS]  # the ranks never see the launch flags
    assert launch == LaunchConfig(nproc=2, nnodes=2, node_rank=1, master_addr="h", master_port=6000)
    assert cli.main(["train", "stage2", "--nproc", "2", "--hostfile", "hosts", *KEYS]) == 0
    assert calls[1] == (["train", "stage2", *KEYS], LaunchConfig(nproc=2, hostfile="hosts"))


def test_cli_refuses_a_bad_launch_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(cli, "relaunch", lambda argv, launch: pytest.fail("must not launch"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "stage2", "--nnodes", "2", *KEYS])
    assert exit_info.value.code == 2 and "needs master_addr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "stage2", "--nproc", "2", *KEYS, "no_such_key=1"])
    assert exit_info.value.code == 2 and "no_such_key" in capsys.readouterr().err
