"""Wake-word adapter: 16 kHz PCM16 in, "the wake word was just said" out.

Owns pymicro-wakeword (microWakeWord models on the TensorFlow Lite runtime that the wheel
bundles, with the built-in models "okay_nabu", "hey_jarvis", "hey_mycroft" and "alexa"; no
download at run time). ``MicroWakeWordFeatures`` turns each 10 ms step into a feature
vector and ``MicroWakeWord`` streams them through the model; a detection is the model's
sliding-window mean probability above the cutoff, then nothing for the refractory period.

Runs on the capture thread, called by ``FrontEnd`` only while the device waits for the wake
word, so it must stay cheap: while the room is quiet (every 10 ms step below the front end's
energy floor for a second) the model sleeps, and when sound returns it first replays the
last quiet steps so that the feature front end sees a clean onset.

Errors in the model choice (an unknown name, a missing or invalid model file) are
``ConfigError`` on ``gate.wake_word``: the TFLite C library crashes the process on a model
it cannot parse, so files are checked before the library sees them.
Imports: numpy, pymicro_wakeword, ``appliance.errors``.
"""

from __future__ import annotations

import ctypes
import json
import logging
from collections import deque
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
from pymicro_wakeword.wakeword import TfLiteWakeWord

from appliance.errors import ConfigError

log = logging.getLogger(__name__)

WAKE_RATE = 16000
STEP = 160  # 10 ms at 16 kHz: the feature front end's hop
BUILTIN = tuple(m.value for m in Model)
DEFAULT_WINDOW = 5  # sliding-window size for a bare .tflite model (the built-ins use 5)
DEFAULT_CUTOFF = 0.9  # cutoff for a bare .tflite model with no JSON next to it
# Same floor as the front end's VAD pre-check (about -56 dBFS): quieter steps are not speech.
QUIET_LEVEL = (32768 * 10 ** (-56 / 20)) ** 2
SLEEP_AFTER_STEPS = 100  # 1 s of quiet and the model sleeps
LEAD_IN_STEPS = 10  # quiet steps replayed when sound returns
ECHO_GUARD_STEPS = 3  # while the speaker plays: model steps in a row above the cutoff


PACKAGE = Path(str(resources.files("pymicro_wakeword")))


def _library() -> Path:
    lib = next(iter(sorted((PACKAGE / "lib").glob("*tensorflowlite_c.*"))), None)
    if lib is None:
        raise ConfigError("gate.wake_word", "pymicro-wakeword has no TFLite runtime for this platform")
    return lib


def _check_model(key: str, model: Path, lib: Path) -> None:
    """Open the model with the TFLite C API and close it again: a file it cannot parse
    would otherwise crash the process inside ``MicroWakeWord``."""
    if not model.is_file():
        raise ConfigError(key, f"no model file at {model}")
    api = TfLiteWakeWord(lib).lib
    handle = api.TfLiteModelCreateFromFile(str(model).encode())
    if not handle:
        raise ConfigError(key, f"{model} is not a TensorFlow Lite model")
    try:
        interpreter = api.TfLiteInterpreterCreate(handle, None)
        if not interpreter:
            raise ConfigError(key, f"{model}: the TFLite runtime cannot run this model")
        api.TfLiteInterpreterDelete(interpreter)
    finally:
        api.TfLiteModelDelete(ctypes.c_void_p(handle))


def load_model(wake_word: str, key: str = "gate.wake_word") -> MicroWakeWord:
    """A built-in model by name, or a custom one: a microWakeWord JSON manifest (with its
    ``.tflite`` beside it) or a bare ``.tflite`` file."""
    lib = _library()
    if wake_word in BUILTIN:
        path = PACKAGE / "models" / f"{wake_word}.json"
    else:
        path = Path(wake_word).expanduser()
        if not path.exists():
            names = ", ".join(BUILTIN)
            raise ConfigError(key, f'"{wake_word}" is neither a built-in wake word ({names}) nor a model file')
    if path.suffix == ".tflite":
        _check_model(key, path, lib)
        try:
            return MicroWakeWord(
                path.stem,
                wake_word=path.stem.replace("_", " "),
                tflite_model=path,
                probability_cutoff=DEFAULT_CUTOFF,
                sliding_window_size=DEFAULT_WINDOW,
                trained_languages=[],
                libtensorflowlite_c_path=lib,
            )
        except ValueError as exc:  # a model that is not quantized the way microWakeWord is
            raise ConfigError(key, f"{path}: {exc}") from None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        model = path.parent / manifest["model"]
        micro = manifest["micro"]
        cutoff = float(micro["probability_cutoff"])
        window = int(micro["sliding_window_size"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(key, f"{path} is not a microWakeWord model manifest ({exc})") from None
    _check_model(key, model, lib)
    try:
        return MicroWakeWord(
            model.stem,
            wake_word=str(manifest.get("wake_word", model.stem)),
            tflite_model=model,
            probability_cutoff=cutoff,
            sliding_window_size=window,
            trained_languages=list(manifest.get("trained_languages", [])),
            libtensorflowlite_c_path=lib,
        )
    except ValueError as exc:
        raise ConfigError(key, f"{model}: {exc}") from None


class WakeWordDetector:
    """Streams 16 kHz audio through a microWakeWord model; ``__call__`` says whether the
    wake word ended in the audio just fed.

    ``cutoff`` (0 to 1) overrides the model's own probability cutoff; ``refractory_ms`` is
    how long nothing is detected after a detection (the probability stays high for a few
    hundred ms). Set ``strict`` while the speaker plays: a detection then needs
    ``ECHO_GUARD_STEPS`` model steps in a row above the cutoff (the echo guard).
    """

    def __init__(
        self,
        wake_word: str = "okay_nabu",
        *,
        cutoff: float | None = None,
        refractory_ms: int = 2000,
        key: str = "gate.wake_word",
    ) -> None:
        self._model = load_model(wake_word, key)
        self.name = self._model.wake_word
        self.cutoff = float(self._model.probability_cutoff if cutoff is None else cutoff)
        self._features = MicroWakeWordFeatures()
        self._refractory_steps = refractory_ms // 10
        self._step = np.zeros(STEP, dtype=np.int16)
        self._fill = 0
        self._lead_in: deque[bytes] = deque(maxlen=LEAD_IN_STEPS)
        self._quiet_run = 0
        self._blocked = 0  # steps left in the refractory period
        self._above = 0  # model steps in a row above the cutoff
        self._feature_count = 0
        self.strict = False
        self.steps = 0  # 10 ms steps seen
        self.model_steps = 0  # 10 ms steps that went through features and the model
        self.detections = 0
        self.last_probability = 0.0

    def __call__(self, pcm: npt.NDArray[np.int16]) -> bool:
        """Feed mono int16 samples at 16 kHz (any length); True when the wake word was
        detected in them."""
        detected = False
        step = self._step
        pos = 0
        while pos < len(pcm):
            take = min(STEP - self._fill, len(pcm) - pos)
            step[self._fill : self._fill + take] = pcm[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == STEP:
                self._fill = 0
                detected = self._on_step(step) or detected
        return detected

    def _on_step(self, step: npt.NDArray[np.int16]) -> bool:
        self.steps += 1
        if self._blocked:
            self._blocked -= 1
        f = step.astype(np.float32)
        quiet = float(np.dot(f, f)) / STEP < QUIET_LEVEL
        data = step.tobytes()
        if quiet:
            self._quiet_run += 1
            if self._quiet_run > SLEEP_AFTER_STEPS:
                self._lead_in.append(data)
                self._above = 0
                return False
        else:
            if self._quiet_run > SLEEP_AFTER_STEPS:
                # Waking up: the feature front end gets the quiet lead-in first.
                for old in self._lead_in:
                    self._run(old)
            self._lead_in.clear()
            self._quiet_run = 0
        return self._run(data)

    def _run(self, data: bytes) -> bool:
        self.model_steps += 1
        detected = False
        for features in self._features.process_streaming(data):
            prob = self._model.process_streaming_prob(features)
            self._feature_count += 1
            if prob is None or self._feature_count % self._model.stride:
                continue  # the model runs once per ``stride`` feature vectors
            self.last_probability = prob
            self._above = self._above + 1 if prob > self.cutoff else 0
            need = ECHO_GUARD_STEPS if self.strict else 1
            if self._above >= need and not self._blocked:
                self._blocked = self._refractory_steps
                self.detections += 1
                detected = True
        return detected

    def close(self) -> None:
        self._model.close()
