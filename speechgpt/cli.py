"""`speechgpt`: one entry point, subcommand groups. Each command maps a YAML config + `key=value` overrides onto its
module's `Config` and calls its `run(cfg)`; a command's module is imported only when that command runs."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from speechgpt.config import ConfigError, describe_fields, dump_config, load_config
from speechgpt.training.launch import LaunchConfig, relaunch


@dataclass(frozen=True)
class Command:
    module: str
    """Module exposing `Config` and `run(cfg) -> Path`."""
    summary: str
    launches: bool = False
    """Takes --nproc, --nnodes ... / --hostfile and starts the processes itself (torchrun or DeepSpeed's launcher)."""
    prints_path: bool = True
    """Print the path `run` returns (False for commands that print their own output, e.g. JSON)."""


COMMANDS: dict[tuple[str, ...], Command] = {
    ("corpus", "synth"): Command(
        "data_builders.synth_corpus", "synthesize a multi-speaker corpus with the installed TTS voices"
    ),
    ("corpus", "import"): Command(
        "data_builders.import_corpus", "import LibriSpeech folders, HF ASR datasets or JSONL/TSV manifests"
    ),
    ("corpus", "stats"): Command("data_builders.corpus_stats", "hours, speakers, utterances, duration histogram"),
    ("units", "fit"): Command("speechgpt.units.fit", "fit k-means on speech-encoder features of a corpus"),
    ("units", "extract"): Command(
        "speechgpt.units.extract", "corpus -> merged units with durations (sharded, resumable)"
    ),
    ("build", "qa"): Command(
        "data_builders.qa_tasks", "checkable question/answer data (arithmetic, counting, WordNet definitions)"
    ),
    ("build", "stage1"): Command("data_builders.build_stage1", "stage-1 data: unit sequences for modality adaptation"),
    ("build", "stage2"): Command("data_builders.build_stage2", "stage-2 data: cross-modal ASR/TTS instructions"),
    ("build", "stage3"): Command(
        "data_builders.build_stage3", "stage-3 data: chain of modality (speech/text question -> speech/text answer)"
    ),
    ("build", "export"): Command("data_builders.export_jsonl", "instruct dataset -> SpeechInstruct JSONL"),
    ("build", "import"): Command("data_builders.import_jsonl", "SpeechInstruct JSONL -> instruct dataset"),
    ("train", "backbone"): Command(
        "stages.stage0_text_backbone",
        "stage 0 (embedded default): a tiny LM trained on the domain's text",
        launches=True,
    ),
    ("train", "stage1"): Command(
        "stages.stage1_modality_adaptation", "stage 1: modality adaptation on unit sequences", launches=True
    ),
    ("train", "stage2"): Command(
        "stages.stage2_cross_modal", "stage 2: cross-modal ASR/TTS instruction fine-tuning", launches=True
    ),
    ("train", "stage3"): Command(
        "stages.stage3_chain_of_modality", "stage 3: chain-of-modality fine-tuning with LoRA", launches=True
    ),
    ("train", "frozen-ctc"): Command(
        "stages.frozen_ctc", "frozen-LLM variant, input stage 1: the speech encoder as a CTC recognizer", launches=True
    ),
    ("train", "frozen-asr"): Command(
        "stages.frozen_asr", "frozen-LLM variant, input stage 2: ASR through the frozen LLM", launches=True
    ),
    ("train", "frozen-qa"): Command(
        "stages.frozen_qa",
        "frozen-LLM variant, input stage 3: spoken questions answered, state head per chunk",
        launches=True,
    ),
    ("train", "frozen-tts"): Command(
        "stages.frozen_tts", "frozen-LLM variant, output stage 1: speech decoder on text -> units pairs", launches=True
    ),
    ("train", "frozen-speak"): Command(
        "stages.frozen_speak",
        "frozen-LLM variant, output stage 2: prefix decoder on the LLM's hidden states of answers (re-aligns too)",
        launches=True,
    ),
    ("eval", "asr"): Command("speechgpt.eval.asr", "WER of a trained model's own transcripts (stage-2 ASR task)"),
    ("eval", "text"): Command(
        "speechgpt.eval.text_qa", "text knowledge: QA accuracy and held-out text loss, before and after speech training"
    ),
    ("chat",): Command(
        "speechgpt.app.chat", "talk to a model: typed text or a WAV in, text and speech out", prints_path=False
    ),
    ("serve",): Command(
        "speechgpt.app.serve", "a local web page to talk to a model (record, upload, type)", prints_path=False
    ),
    ("vocoder", "train"): Command(
        "vocoder.train",
        "train a unit vocoder (mel net + Griffin-Lim, or unit HiFi-GAN) with its duration predictor",
        launches=True,
    ),
    ("vocoder", "synth"): Command("vocoder.synth", "units (dataset rows, a file or a string) -> WAV files"),
    ("vocoder", "codec-units"): Command(
        "vocoder.codec_units", "a corpus as EnCodec codes (units contract) and the vocoder folder that decodes them"
    ),
    ("eval", "resynth"): Command(
        "speechgpt.app.resynth", "held-out sentences -> units -> vocoder: WER/CER, DNSMOS and MCD beside the originals"
    ),
    ("eval", "tts"): Command(
        "speechgpt.app.tts_eval", "new sentences read aloud by a model, voiced and judged by Whisper: WER/CER"
    ),
    ("eval", "chat"): Command(
        "speechgpt.app.spoken_qa", "held-out spoken questions answered in speech, scored by the Whisper judge"
    ),
    ("demo",): Command("speechgpt.app.demo", "run the pipeline on the embedded offline default"),
    ("compare",): Command("speechgpt.app.compare", "the unified and frozen variants side by side: report.md/json"),
}
VOICES_HELP = "list the TTS voices installed on this machine"
GROUPS = {
    "corpus": "Speech corpora: synthesize one with TTS voices, import one, describe one",
    "units": "Discrete speech units: fit k-means on encoder features, extract merged units",
    "build": "SpeechInstruct data for the three stages, question/answer data, JSONL export and import",
    "train": "Training under DeepSpeed: text backbone, stages 1-3, frozen-LLM stages; one machine or several",
    "eval": "Scores: ASR word error rate, text knowledge, resynthesis, reading aloud, spoken question answering",
    "vocoder": "Unit vocoder: train one, synthesize speech from units",
}
"""Command groups and what their commands do together (`speechgpt GROUP --help`)."""
LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--hostfile")
"""Flags of commands that start their own processes; the launcher consumes them, the ranks never see them."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run_command(args)
    except BrokenPipeError:
        # The reader left early (`speechgpt --help | head`): stop quietly, as a pipe's writer killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return 128 + signal.SIGPIPE


def _run_command(args: list[str]) -> int:
    if args[:2] == ["corpus", "voices"]:
        return _list_voices(args[2:])
    words = next((w for w in COMMANDS if tuple(args[: len(w)]) == w), None)
    if words is None:
        return _print_usage(args)
    command = COMMANDS[words]
    module = importlib.import_module(command.module)
    parser = _command_parser(f"speechgpt {' '.join(words)}", command, module.Config)
    flags = _add_module_flags(parser, module)
    ns = parser.parse_args(args[len(words) :])
    try:
        cfg = _apply_flags(load_config(module.Config, ns.config, ns.overrides), ns, flags)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    if ns.dump_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    launch = _launch_config(parser, ns) if command.launches and "RANK" not in os.environ else None
    if launch is not None and launch.is_distributed:  # checked above, so a bad key fails once, not in every rank
        try:
            return relaunch(_without_launch_flags(args), launch)
        except FileNotFoundError as err:
            parser.exit(1, f"error: {err}\n")
    try:
        out = module.run(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        logging.getLogger("speechgpt").error("%s failed: %s", " ".join(words), err)
        return 1
    finally:
        _leave_process_group()
    if command.prints_path:
        print(out)
    return 0


def _leave_process_group() -> None:
    """Destroy the process group of a multi-process run's rank, which exits after its command: one that exits with
    it open can abort at exit ("terminate called without an active exception") while its communication threads run.
    A lone process keeps its group, which DeepSpeed caches for the next command run in the same process."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as td

    if td.is_available() and td.is_initialized() and td.get_world_size() > 1:
        td.destroy_process_group()


def _print_usage(args: list[str]) -> int:
    """Usage of everything, or of one group (`speechgpt corpus --help`); to stdout and 0 when help was asked for."""
    group = args[0] if args and args[0] in GROUPS else None
    rest = args[1:] if group else args
    asked = rest[:1] in (["-h"], ["--help"])
    text = _usage(group)
    if rest and not asked:
        text = f"speechgpt: unknown command {' '.join(args[: 2 if group else 1])!r}\n\n{text}"
    print(text, file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2


def _usage(group: str | None = None) -> str:
    rows = [("corpus voices", VOICES_HELP)] + [(" ".join(w), c.summary) for w, c in COMMANDS.items()]
    if group is not None:
        rows = [(name, summary) for name, summary in rows if name.split()[0] == group]
        head = [f"usage: speechgpt {group} COMMAND [--config FILE.yaml] [--dump-config] [key=value ...]", ""]
        head += [f"{GROUPS[group]}.", "", f"{group} commands:"]
    else:
        head = [
            "usage: speechgpt COMMAND [--config FILE.yaml] [--dump-config] [key=value ...]",
            "",
            "SpeechGPT-style discrete-unit speech language models: corpora, units, SpeechInstruct data,",
            "three-stage training, unit vocoder, chat.",
            "",
            "commands:",
        ]
    return "\n".join(
        [
            *head,
            *(f"  {name:<16} {summary}" for name, summary in rows),
            "",
            "Each command maps a YAML file and key=value overrides (dotted for nested keys) onto its config;",
            "`speechgpt COMMAND --help` lists the keys with their meaning and defaults.",
        ]
    )


def _command_parser(prog: str, command: Command, config_cls: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{command.summary[0].upper()}{command.summary[1:]}.",
        epilog="config keys (YAML file or key=value overrides; dotted keys for nested):\n"
        + describe_fields(config_cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file mapping onto the config; unknown keys are errors")
    parser.add_argument("--dump-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied after --config")
    if command.launches:
        _add_launch_flags(parser)
    return parser


def _add_launch_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "several processes",
        "one machine:  --nproc N  (torchrun)\n"
        "several machines, the same command on each (SLURM, Kubernetes; no ssh):\n"
        "  --nproc N --nnodes M --node-rank R --master-addr NODE0 [--master-port P]\n"
        "several machines started from this one over passwordless ssh (DeepSpeed's launcher):\n"
        "  --nproc N --hostfile FILE",
    )
    group.add_argument("--nproc", type=int, default=1, metavar="N", help="processes per machine")
    group.add_argument("--nnodes", type=int, default=1, metavar="M", help="machines in the job (torchrun on each)")
    group.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's index, 0..M-1")
    group.add_argument("--master-addr", metavar="HOST", help="address of node 0, reachable from every machine")
    group.add_argument(
        "--master-port", type=int, metavar="P", help="rendezvous port on node 0 (default 29500 for several nodes)"
    )
    group.add_argument("--hostfile", metavar="FILE", help="DeepSpeed hostfile, 'host slots=N' per line")


def _launch_config(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> LaunchConfig:
    try:
        return LaunchConfig(
            nproc=ns.nproc,
            nnodes=ns.nnodes,
            node_rank=ns.node_rank,
            master_addr=ns.master_addr,
            master_port=ns.master_port,
            hostfile=ns.hostfile,
        )
    except ValueError as err:
        parser.error(str(err))


def _add_module_flags(parser: argparse.ArgumentParser, module: Any) -> list[str]:
    """Shortcut flags a command module adds with `add_arguments(parser)`; each one's dest is a config key."""
    hook = getattr(module, "add_arguments", None)
    if hook is None:
        return []
    before = {action.dest for action in parser._actions}
    hook(parser)
    return [action.dest for action in parser._actions if action.dest not in before]


def _apply_flags(cfg: Any, ns: argparse.Namespace, flags: list[str]) -> Any:
    """Flags given on the command line win over --config and key=value (flags left unset change nothing)."""
    try:
        for dest in flags:
            if getattr(ns, dest) is not None:
                cfg = _replace_key(cfg, dest.split("."), getattr(ns, dest))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {type(cfg).__name__}: {err}") from None
    return cfg


def _replace_key(cfg: Any, keys: list[str], value: Any) -> Any:
    """`dataclasses.replace` down a dotted key (each level's __post_init__ checks the new value)."""
    if len(keys) > 1:
        value = _replace_key(getattr(cfg, keys[0]), keys[1:], value)
    return dataclasses.replace(cfg, **{keys[0]: value})


def _without_launch_flags(args: list[str]) -> list[str]:
    """The command line less the flags the launcher takes over (both `--flag value` and `--flag=value`)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in LAUNCH_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in LAUNCH_FLAGS)):
            kept.append(arg)
    return kept


def _list_voices(args: list[str]) -> int:
    if args[:1] in (["-h"], ["--help"]):
        print(f"usage: speechgpt corpus voices\n\n{VOICES_HELP[0].upper()}{VOICES_HELP[1:]}.")
        return 0
    if args:
        print(f"speechgpt corpus voices takes no arguments, got {' '.join(args)}", file=sys.stderr)
        return 2
    from data_builders.tts import espeak_variants, installed_voices

    voices = installed_voices()
    if not voices:
        print("no TTS voices found: install flite, festival (+ festvox voices) or espeak-ng")
        return 1
    for voice in voices:
        print(voice.key)
    variants = espeak_variants()
    if variants:
        print(f"espeak-ng variants (append as +name, e.g. espeak-ng:en-us+f3): {' '.join(variants)}")
    return 0


def _exit_rank(code: int) -> None:
    """End a rank of a multi-process run at once, once its output is flushed. Even with its process group destroyed,
    a rank of a two-process ZeRO-3 CPU run sometimes aborted in C++ teardown after its command had finished and
    written everything ("terminate called without an active exception", exit -6), failing the whole run; os._exit
    skips that teardown."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a rank started by torchrun or DeepSpeed's launcher
        _exit_rank(code)
    sys.exit(code)
