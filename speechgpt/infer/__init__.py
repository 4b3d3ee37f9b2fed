"""Chain-of-modality inference, vocoder-agnostic: load a speech LM, answer in speech or text, stream audio.

    from speechgpt.infer import ChatSession, SessionConfig, Sampling

    session = ChatSession.from_pretrained(model_dir, speech_to_units=to_units, vocoder=vocoder, config=SessionConfig())
    result = session.respond(text="what is two plus two", reply="speech")  # ChatResult (result.to_json() for JSON)
    for event in session.stream(audio=samples_16k):                        # ChatEvent: transcript/text/units/audio/done
        ...

The frozen-LLM variant (speech in, text out) listens as a stream and answers behind the same chat surface:

    from speechgpt.infer import FrozenChatSession, FrozenListener, load_frozen_model

    frozen = load_frozen_model("out/demo/frozen_qa/final")   # speech modules + the backbone they name
    turn = FrozenListener(frozen).listen(samples_16k)        # turn.states per 160 ms chunk, turn.text, latencies
    session = FrozenChatSession(frozen)                       # stream(audio=...): "state" events, "text", "done"

Modules: `loading` (model folders, adapters, SpeechGPT's release, unit format detection), `constrain` (the template as
a LogitsProcessor state machine), `generation` (sampling settings, token streaming), `routing` (answer parts while
generating), `speaking` (streamed or whole-answer vocoding), `results` (ChatResult, ChatEvent, Timings), `session`
(ChatSession), `reading` (a given text read aloud by either variant, as a TTS), `vocoding` (the protocols a
vocoder satisfies); for the frozen variant `frozen_loading` (its model
folder, the variant of a folder), `listening` (FrozenListener: streaming state decisions, text answers, latencies)
and `frozen_session` (FrozenChatSession). Nothing here imports `vocoder/`.
"""

from speechgpt.infer.constrain import AnswerShape, StructureConstraint, TokenClasses
from speechgpt.infer.frozen_loading import FrozenModel, load_frozen_model, model_variant
from speechgpt.infer.frozen_session import FrozenChatSession
from speechgpt.infer.generation import Sampling
from speechgpt.infer.listening import Decision, FrozenListener, ListenConfig, Turn
from speechgpt.infer.loading import LoadedModel, load_chat_model
from speechgpt.infer.results import MODES, ChatEvent, ChatResult, Mode, Timings
from speechgpt.infer.session import ChatSession, PromptTooLongError, SessionConfig
from speechgpt.infer.speech_input import SpeechToUnits, speech_to_units_from_kmeans
from speechgpt.infer.vocoding import StreamingVocoder, UnitAudioStream, UnitsToAudio
from speechgpt.text.units import detect_unit_format

__all__ = [
    "MODES",
    "AnswerShape",
    "ChatEvent",
    "ChatResult",
    "ChatSession",
    "Decision",
    "FrozenChatSession",
    "FrozenListener",
    "FrozenModel",
    "ListenConfig",
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
    "Turn",
    "UnitAudioStream",
    "UnitsToAudio",
    "detect_unit_format",
    "load_chat_model",
    "load_frozen_model",
    "model_variant",
    "speech_to_units_from_kmeans",
]
