"""A live stream as the duplex session hears it: the streaming counterpart of `condition_question`.

A fixed energy threshold fails both ways on recordings: background noise above it opens an utterance at the first
piece of the stream, and a quiet microphone's speech never crosses it. `StreamConditioner` opens an utterance where
20 ms frames rise `floor_margin_db` above the stream's own noise floor (the 10th-percentile frame of the last
`floor_window_s` heard between utterances and of the piece itself), come within `below_speech_db` of the stream's
speech level and are louder than `min_db`; a frame within `sure_below_speech_db` of that level is speech even where the
floor is not yet known (a stream that starts mid-sentence). The utterance starts `margin_s` before its first speech
frame (a soft onset's first frames, from earlier pieces where need be), and each of its pieces is scaled so that the
utterance's speech frames so far have an RMS of `level_db` (by at most `max_gain_db`, never past full scale), as a
whole question is.

    conditioner = StreamConditioner()
    heard = conditioner.start(piece)      # closed: None (no speech), or the audio the utterance opens with
    heard = conditioner.follow(piece)     # open: the piece as the listener should hear it
    conditioner.end()                     # the utterance was decided: listen for the next one
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from speechgpt.data.audio import SAMPLE_RATE, frame_power
from speechgpt.infer.speech_input import (
    FLOOR_MARGIN_DB,
    FRAME,
    MARGIN_S,
    MAX_GAIN_DB,
    SPEECH_LEVEL_DB,
    speech_gain_db,
    with_gain,
)


@dataclass(kw_only=True)
class StreamSettings:
    floor_margin_db: float = FLOOR_MARGIN_DB
    """A speech frame is this much louder than the stream's noise floor."""
    below_speech_db: float = 30.0
    """... and at most this much quieter than the stream's speech level (`level_db` until an utterance was heard,
    then halfway to each one's speech), so that an utterance opens at its speech, not at the breath before it."""
    min_db: float = -60.0
    """... and louder than this (dB full scale), so that digital silence does not make every click speech."""
    sure_below_speech_db: float = 10.0
    """A frame this close to the stream's speech level is speech whatever the floor says (a stream that starts
    mid-sentence has no noise floor to measure yet)."""
    min_speech_s: float = 0.04
    """Speech frames a piece must hold to open an utterance."""
    floor_window_s: float = 2.0
    """The noise floor is the 10th-percentile frame of this much audio heard between utterances."""
    margin_s: float = MARGIN_S
    """Audio before the first speech frame that the utterance starts with (a whole question keeps as much)."""
    level_db: float = SPEECH_LEVEL_DB
    """RMS of the utterance's speech frames as the listener hears them (dBFS)."""
    max_gain_db: float = MAX_GAIN_DB
    """The most a quiet stream is raised."""
    gain: bool = True
    """Scale the speech to `level_db`; false: only detect it."""


def frame_levels(wave: np.ndarray) -> np.ndarray:
    """dB full scale of each whole 20 ms frame of `wave`."""
    return 10 * np.log10(frame_power(wave, FRAME) + 1e-12)


class StreamConditioner:
    """One stream's speech detector and gain (see the module doc); push pieces from one thread."""

    def __init__(self, settings: StreamSettings | None = None) -> None:
        self.settings = settings or StreamSettings()
        self._floor_levels: deque[float] = deque(
            maxlen=max(1, round(self.settings.floor_window_s * SAMPLE_RATE / FRAME))
        )
        self._before = np.zeros(0, np.float32)
        self._threshold_db = 0.0
        self._speech_power, self._speech_frames, self._peak = 0.0, 0, 0.0
        self.gain_db = 0.0
        """The gain of the last piece heard."""
        self.speech_db = self.settings.level_db
        """The stream's speech level (dBFS, before gain): `level_db`, moved halfway to each utterance's speech."""

    def start(self, piece: np.ndarray) -> np.ndarray | None:
        """Between utterances: None when `piece` holds no speech (it then updates the noise floor), else the audio
        the utterance opens with, conditioned: from `margin_s` before its first speech frame (earlier pieces'
        audio included) to the piece's end."""
        s = self.settings
        wave = np.asarray(piece, dtype=np.float32).reshape(-1)
        levels = frame_levels(wave)
        heard = [*self._floor_levels, *levels.tolist()]  # the piece too: a stream may start in noise
        threshold = max(s.min_db, self.speech_db - s.below_speech_db)
        if heard:
            threshold = max(threshold, min(float(np.percentile(heard, 10)) + s.floor_margin_db, self._sure_db))
        speech = levels > threshold
        margin = round(s.margin_s * SAMPLE_RATE)
        if np.count_nonzero(speech) * FRAME < s.min_speech_s * SAMPLE_RATE:
            self._floor_levels.extend(levels.tolist())
            self._before = np.concatenate([self._before, wave])[-margin:] if margin else np.zeros(0, np.float32)
            return None
        self._threshold_db = threshold
        self._speech_power, self._speech_frames, self._peak = 0.0, 0, 0.0
        onset = self._before.size + int(np.argmax(speech)) * FRAME
        opening = np.concatenate([self._before, wave])[max(onset - margin, 0) :]
        self._before = np.zeros(0, np.float32)
        return self.follow(opening)

    @property
    def _sure_db(self) -> float:
        return self.speech_db - self.settings.sure_below_speech_db

    def follow(self, piece: np.ndarray) -> np.ndarray:
        """A piece of the open utterance, scaled as its speech so far asks."""
        s = self.settings
        wave = np.asarray(piece, dtype=np.float32).reshape(-1)
        levels = frame_levels(wave)
        speech = levels[levels > self._threshold_db]
        self._speech_power += float(np.sum(10 ** (speech / 10)))
        self._speech_frames += speech.size
        self._peak = max(self._peak, float(np.abs(wave).max()) if wave.size else 0.0)
        if not s.gain or not self._speech_frames:
            return wave
        mean_power = self._speech_power / self._speech_frames
        self.gain_db = speech_gain_db(mean_power, self._peak, s.level_db, s.max_gain_db)
        return with_gain(wave, self.gain_db)

    def end(self) -> None:
        """The utterance was decided: the next piece may open another."""
        self._before = np.zeros(0, np.float32)
        if self._speech_frames:
            heard = 10 * np.log10(self._speech_power / self._speech_frames)
            self.speech_db = float((self.speech_db + heard) / 2)
