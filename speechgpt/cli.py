"""`speechgpt`: one entry point, subcommand groups. Each command maps a YAML config + `key=value` overrides onto its
module's `Config` and calls its `run(cfg)`; a command's module is imported only when that command runs."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from speechgpt.config import ConfigError, describe_fields, dump_config, load_config


@dataclass(frozen=True)
class Command:
    module: str
    """Module exposing `Config` and `run(cfg) -> Path`."""
    summary: str
    launches: bool = False
    """Takes --nproc / --hostfile and starts the processes itself (torchrun or the DeepSpeed launcher)."""
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
    ("eval", "asr"): Command("speechgpt.eval.asr", "WER of a trained model's own transcripts (stage-2 ASR task)"),
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
    ("eval", "resynth"): Command(
        "speechgpt.app.resynth", "held-out clips -> units -> vocoder -> ASR judge: WER and MCD against the originals"
    ),
    ("eval", "chat"): Command(
        "speechgpt.app.spoken_qa", "held-out spoken questions answered in speech, scored by the Whisper judge"
    ),
    ("demo",): Command("speechgpt.app.demo", "run the pipeline on the embedded offline default"),
}
VOICES_HELP = "list the TTS voices installed on this machine"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args[:2] == ["corpus", "voices"]:
        return _list_voices()
    words = next((w for w in COMMANDS if tuple(args[: len(w)]) == w), None)
    if words is None:
        print(_usage(), file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    command = COMMANDS[words]
    module = importlib.import_module(command.module)
    parser = _command_parser(f"speechgpt {' '.join(words)}", command, module.Config)
    flags = _add_module_flags(parser, module)
    ns = parser.parse_args(args[len(words) :])
    if command.launches and (ns.nproc > 1 or ns.hostfile) and "RANK" not in os.environ:
        from speechgpt.training.distributed import relaunch

        return relaunch(_without_launch_flags(args), ns.nproc, ns.hostfile)
    try:
        cfg = _apply_flags(load_config(module.Config, ns.config, ns.overrides), ns, flags)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    if ns.dump_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    try:
        out = module.run(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        logging.getLogger("speechgpt").error("%s failed: %s", " ".join(words), err)
        return 1
    if command.prints_path:
        print(out)
    return 0


def _usage() -> str:
    rows = [("corpus voices", VOICES_HELP)] + [(" ".join(w), c.summary) for w, c in COMMANDS.items()]
    return "\n".join(
        [
            "usage: speechgpt COMMAND [--config FILE.yaml] [--dump-config] [key=value ...]",
            "",
            "SpeechGPT-style discrete-unit speech language models: corpora, units, SpeechInstruct data,",
            "three-stage training, unit vocoder, chat.",
            "",
            "commands:",
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
        parser.add_argument("--nproc", type=int, default=1, help="processes per node (torchrun / DeepSpeed launcher)")
        parser.add_argument("--hostfile", help="DeepSpeed hostfile for several machines ('host slots=N' per line)")
    return parser


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
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--nproc", "--hostfile"):
            skip = True
        elif not arg.startswith(("--nproc=", "--hostfile=")):
            kept.append(arg)
    return kept


def _list_voices() -> int:
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


if __name__ == "__main__":
    sys.exit(main())
