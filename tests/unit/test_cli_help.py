"""`speechgpt --help`, `speechgpt GROUP --help` and friends, as a new user types them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from speechgpt import cli
from tests.conftest import subprocess_env

GROUP_NAMES = sorted({words[0] for words in cli.COMMANDS if len(words) > 1})


def test_every_command_group_has_a_description() -> None:
    assert sorted(cli.GROUPS) == GROUP_NAMES


@pytest.mark.parametrize("group", GROUP_NAMES)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_group_help_lists_that_groups_commands_and_exits_0(
    group: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([group, flag]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"usage: speechgpt {group} COMMAND")
    listed = {line.split()[1] for line in out.splitlines() if line.startswith(f"  {group} ")}
    expected = {words[1] for words in cli.COMMANDS if words[0] == group} | ({"voices"} if group == "corpus" else set())
    assert listed == expected
    assert not any(line.startswith("  ") and not line.startswith(f"  {group} ") for line in out.splitlines())


def test_global_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and all(f"  {' '.join(words):<16} " in out for words in cli.COMMANDS)


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["corpus"], "usage: speechgpt corpus COMMAND"),
        (["corpus", "bogus"], "speechgpt: unknown command 'corpus bogus'"),
        (["bogus"], "speechgpt: unknown command 'bogus'"),
        ([], "usage: speechgpt COMMAND"),
    ],
)
def test_a_missing_or_unknown_command_is_an_error_on_stderr(
    args: list[str], first_line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[0].startswith(first_line)


def test_corpus_voices_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["corpus", "voices", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: speechgpt corpus voices")
    assert cli.main(["corpus", "voices", "extra"]) == 2


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["train", "stage1", "--help"]])
def test_help_into_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    """`speechgpt --help | head`: the reader may be gone before the help is written; no traceback then."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechgpt.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the child has started: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert code in (0, 141)


@pytest.mark.parametrize(
    ("code", "args"),
    [(0, ["train", "stage2", "--config", "configs/tiny/stage2.yaml", "--dump-config"]), (2, ["train", "nonsense"])],
)
def test_a_rank_of_many_exits_with_its_code_and_all_its_output(code: int, args: list[str]) -> None:
    """A rank of a multi-process run ends through os._exit (no C++ teardown), so what it printed into a pipe must be
    flushed first, and its exit code kept: the same output and code as a lone process's."""
    repo = Path(__file__).resolve().parents[2]
    buffered = {k: v for k, v in subprocess_env().items() if k != "PYTHONUNBUFFERED"}  # a pipe holds what is unflushed
    lone, rank = (
        subprocess.run(
            [sys.executable, "-m", "speechgpt.cli", *args], capture_output=True, text=True, env=env, cwd=repo
        )
        for env in (buffered, buffered | {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    )
    assert lone.returncode == rank.returncode == code
    assert rank.stdout == lone.stdout and rank.stderr == lone.stderr
    assert (code == 0) == ("max_steps: 1400" in rank.stdout)
