"""Chain-of-modality inference, vocoder-agnostic: load a speech LM, answer in speech or text, stream audio.

    from speechgpt.infer import ChatSession, SessionConfig, Sampling

    session = ChatSession.from_pretrained(model_dir, speech_to_units=to_units, vocoder=vocoder, config=SessionConfig())
    result = session.respond(text="what is two plus two", reply="speech")  # ChatResult (result.to_json() for JSON)
    for event in session.stream(audio=samples_16k):                        # ChatEvent: transcript/text/units/audio/done
        ...

Modules: `loading` (model folders, adapters, SpeechGPT's release, unit format detection), `constrain` (the template as
a LogitsProcessor state machine), `generation` (sampling settings, token streaming), `routing` (answer parts while
generating), `speaking` (streamed or whole-answer vocoding), `results` (ChatResult, ChatEvent, Timings), `session`
(ChatSession), `vocoding` (the protocols a vocoder satisfies). Nothing here imports `vocoder/`.
"""

from speechgpt.infer.constrain import AnswerShape, StructureConstraint, TokenClasses
from speechgpt.infer.generation import Sampling
from speechgpt.infer.loading import LoadedModel, load_chat_model
from speechgpt.infer.results import MODES, ChatEvent, ChatResult, Mode, Timings
from speechgpt.infer.session import (
    ChatSession,
    PromptTooLongError,
    SessionConfig,
    SpeechToUnits,
    speech_to_units_from_kmeans,
)
from speechgpt.infer.vocoding import StreamingVocoder, UnitAudioStream, UnitsToAudio
from speechgpt.text.units import detect_unit_format

__all__ = [
    "MODES",
    "AnswerShape",
    "ChatEvent",
    "ChatResult",
    "ChatSession",
    "LoadedModel",
    "Mode",
    "PromptTooLongError",
    "Sampling",
    "SessionConfig",
    "SpeechToUnits",
    "StreamingVocoder",
    "StructureConstraint",
    "Timings",
    "TokenClasses",
    "UnitAudioStream",
    "UnitsToAudio",
    "detect_unit_format",
    "load_chat_model",
    "speech_to_units_from_kmeans",
]
