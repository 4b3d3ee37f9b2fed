"""Festival voices kept loaded: one `festival --pipe` process per voice and Python process.

`text2wave` starts festival and loads the voice for every clip (0.26-0.34 s each here, most of a TTS corpus build's
time); a kept process only synthesizes. Festival reads its commands as they arrive but buffers what it prints, so
each clip is followed by a command that creates an empty marker file, and the caller waits for that file.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from speechgpt.data.audio import AudioError

_sessions: dict[tuple[int, str], FestivalSession] = {}


class FestivalSession:
    """One festival process speaking with one voice; `synthesize` returns a WAV path the caller deletes."""

    def __init__(self, voice: str, timeout_s: float) -> None:
        self.voice, self.timeout_s = voice, timeout_s
        self.folder = Path(tempfile.mkdtemp(prefix="speechgpt-festival-"))
        self.log = open(self.folder / "stderr.txt", "wb")  # noqa: SIM115 - lives as long as the process
        try:
            self.process = subprocess.Popen(
                ["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log
            )
        except FileNotFoundError:
            self.close()
            raise AudioError("tts failed: festival is not installed") from None
        self.count = 0
        self._run(f"(voice_{voice})\n")
        if "ERROR" in self._errors():  # festival keeps its default voice when the asked one is unknown
            self.close()
            raise AudioError(f"tts failed: festival has no voice {voice!r}")

    def synthesize(self, text: str) -> Path:
        self.count += 1
        wav = self.folder / f"{self.count}.wav"
        said = " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"')
        self._run(f'(utt.save.wave (utt.synth (Utterance Text "{said}")) "{wav}" \'riff)\n')
        if not wav.exists():
            raise AudioError(f"tts failed: festival:{self.voice} wrote no audio: {self._errors()}")
        return wav

    def _run(self, commands: str) -> None:
        """Send commands, then one that creates a marker file, and wait for the marker."""
        done = self.folder / "done"
        self._send(f'{commands}(fclose (fopen "{done}" "w"))\n')
        started = time.monotonic()
        while not done.exists():
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AudioError(f"tts failed: festival:{self.voice} exited {code}: {self._errors()}")
            if time.monotonic() - started > self.timeout_s:
                self.close()
                raise AudioError(f"tts failed: festival:{self.voice} timed out after {self.timeout_s:.0f}s")
            time.sleep(0.002)
        done.unlink()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            try:
                process.communicate(timeout=5)  # closes stdin: festival ends at end of input
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _send(self, commands: str) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(commands.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise AudioError(f"tts failed: festival:{self.voice} stopped: {self._errors()}") from None

    def _errors(self) -> str:
        self.log.flush()
        return (self.folder / "stderr.txt").read_text(errors="replace").strip()[-300:] or "no message"


def festival_session(voice: str, timeout_s: float) -> FestivalSession:
    """This process's session for `voice`, started (again) when there is none or it died."""
    key = (os.getpid(), voice)
    session = _sessions.get(key)
    if session is None or not session.alive:
        if session is not None:
            session.close()
        session = _sessions[key] = FestivalSession(voice, timeout_s)
    return session


@atexit.register
def _close_all() -> None:
    for (pid, _), session in list(_sessions.items()):
        if pid == os.getpid():
            session.close()
    _sessions.clear()
