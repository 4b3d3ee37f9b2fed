"""Offline TTS engines behind one call: flite, festival and espeak-ng installed from the OS, Piper from packages.

A voice is named `engine:voice`, e.g. `flite:slt`, `festival:kal_diphone`, `espeak-ng:en-us+f3` (an espeak-ng
language with an optional `+variant`), `piper:<model stem>` (e.g. `piper:en_US-joe-medium`, see
data_builders/piper_voices.py).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from data_builders.festival import festival_session
from data_builders.piper_voices import piper_available, piper_models, speak_piper
from speechgpt.data.audio import Audio16k, AudioError, to_16k_mono
from speechgpt.data.corpus import SourceItem, safe_name

ENGINES = ("flite", "festival", "espeak-ng", "piper")
FESTIVAL_VOICE_DIRS = (Path("/usr/share/festival/voices"),)
_FLITE_SKIP = {"awb_time"}  # a voice that can only say the time
_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True, order=True)
class Voice:
    engine: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def speaker(self) -> str:
        """Speaker label used in corpora: file-name safe, stable for the voice."""
        return safe_name(f"{self.engine}-{self.name}")


def parse_voice(key: str) -> Voice:
    engine, sep, name = key.partition(":")
    if not sep or engine not in ENGINES or not name:
        raise ValueError(f"voice {key!r} is not of the form engine:name with engine in {', '.join(ENGINES)}")
    return Voice(engine, name)


@functools.cache
def installed_voices() -> tuple[Voice, ...]:
    """Voices of every engine found on this machine (espeak-ng: base English voices; any `+variant` also works)."""
    return tuple(sorted(_flite_voices() + _festival_voices() + _espeak_voices() + _piper_voices()))


@functools.cache
def espeak_variants() -> tuple[str, ...]:
    if not shutil.which("espeak-ng"):
        return ()
    out = _run(["espeak-ng", "--voices=variant"]).stdout.decode()
    return tuple(sorted(line.split()[4].removeprefix("!v/") for line in out.splitlines()[1:] if line.split()))


def check_voice(voice: Voice) -> None:
    """Raise ValueError naming the voice when it is not installed here."""
    if voice.engine == "espeak-ng":
        base, _, variant = voice.name.partition("+")
        if Voice("espeak-ng", base) not in installed_voices() or (variant and variant not in espeak_variants()):
            raise ValueError(f"voice {voice.key} is not installed (see `speechgpt corpus voices`)")
    elif voice not in installed_voices():
        raise ValueError(f"voice {voice.key} is not installed (see `speechgpt corpus voices`)")


def synthesize(voice_key: str, text: str) -> Audio16k:
    """Speak `text` with a voice and return 16 kHz mono audio. Raises AudioError when the engine fails."""
    voice = parse_voice(voice_key)
    if voice.engine == "festival":
        return _festival(voice.name, text)
    if voice.engine == "piper":
        return speak_piper(voice.name, text)
    with tempfile.TemporaryDirectory(prefix="speechgpt-tts-") as tmp:
        text_file, wav = Path(tmp) / "text.txt", Path(tmp) / "out.wav"
        text_file.write_text(text + "\n", encoding="utf-8")
        command = _command(voice, text_file, wav)
        result = _run(command)
        if result.returncode != 0 or not wav.exists():
            detail = result.stderr.decode(errors="replace").strip()[-300:]
            raise AudioError(f"tts failed: {voice.key} exited {result.returncode}: {detail}")
        return _read_16k(wav)


def _festival(name: str, text: str) -> Audio16k:
    """A kept festival process per voice (text2wave would load festival and the voice per clip). Diphone voices now
    and then end a clip in a burst of noise that the same text in the same process does not give again (2 of 2052
    clips of one demo corpus): they speak each text twice, and a third time when the two differ, keeping the take
    that two agree on (else the quietest), so a corpus build gives the same audio every time."""
    session = festival_session(name, _TIMEOUT_S)

    def take() -> Audio16k:
        wav = session.synthesize(text)
        try:
            return _read_16k(wav)
        finally:
            wav.unlink(missing_ok=True)

    first = take()
    if not name.endswith("_diphone"):
        return first
    second = take()
    if np.array_equal(first.samples, second.samples):
        return first
    third = take()
    for a, b in ((first, third), (second, third)):
        if np.array_equal(a.samples, b.samples):
            return a
    return min((first, second, third), key=lambda audio: float(np.abs(audio.samples).max()))


def _read_16k(wav: Path) -> Audio16k:
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    return to_16k_mono(data, rate)


def tts_item(item_id: str, voice: Voice, text: str, split: str, origin: str) -> SourceItem:
    """A corpus item whose audio is `text` spoken by `voice`, synthesized when the build converts it."""
    return SourceItem(
        id=item_id,
        speaker=voice.speaker,
        text=text,
        load_audio=functools.partial(synthesize, voice.key, text),
        source=f"tts:{voice.key}",
        split=split,
        origin=origin,
    )


def _command(voice: Voice, text_file: Path, wav: Path) -> list[str]:
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "-f", str(text_file), "-o", str(wav)]
    return ["espeak-ng", "-v", voice.name, "-f", str(text_file), "-w", str(wav)]


def _run(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(command, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"tts failed: {command[0]} timed out after {_TIMEOUT_S}s") from None
    except FileNotFoundError:
        raise AudioError(f"tts failed: {command[0]} is not installed") from None


def _flite_voices() -> list[Voice]:
    if not shutil.which("flite"):
        return []
    out = _run(["flite", "-lv"]).stdout.decode()
    names = out.split(":", 1)[1].split() if ":" in out else []
    return [Voice("flite", n) for n in names if n not in _FLITE_SKIP]


def _festival_voices() -> list[Voice]:
    if not shutil.which("text2wave"):
        return []
    found = []
    for root in FESTIVAL_VOICE_DIRS:
        if root.is_dir():
            found += [Voice("festival", d.name) for d in root.glob("*/*") if d.is_dir()]
    return found


def _espeak_voices() -> list[Voice]:
    if not shutil.which("espeak-ng"):
        return []
    out = _run(["espeak-ng", "--voices=en"]).stdout.decode()
    voices = set()
    for line in out.splitlines()[1:]:
        parts = line.split()
        # mbrola voices (file mb/...) need separate diphone databases; keep espeak-ng's own formant voices
        if len(parts) >= 5 and not parts[4].startswith("mb/") and parts[1] != "variant":
            voices.add(Voice("espeak-ng", parts[1]))
    return sorted(voices)


def _piper_voices() -> list[Voice]:
    return [Voice("piper", name) for name in sorted(piper_models())] if piper_available() else []
