"""Smart Turn v3, for the turn bench: a turn's last 8 s of 16 kHz audio in, P(complete) out.

Smart Turn (pipecat-ai, BSD-2) is a Whisper-tiny encoder with a classifier head, trained on
whether a speaker has finished (grammar, intonation, pace). Its 8.7 MB int8 CPU ONNX file
ships inside the ``pipecat-ai`` wheel. Nothing here imports pipecat (its dependencies are far
too heavy for a Pi Zero): ``model_path()`` finds the file through the installed distribution's
file list, and only onnxruntime runs it, once per pause. The Whisper log-mel features follow
pipecat's ``_whisper_features.py`` (numpy only). Not in the daemon: on the bench's synthetic
speech it calls most requests incomplete and costs ~85 ms per call on x86 (see bench.turns).

    .venv/bin/pip install onnxruntime && .venv/bin/pip install --no-deps pipecat-ai
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

RATE = 16000
WINDOW_SAMPLES = 8 * RATE
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
_N_FFT, _HOP, _N_MELS = 400, 160, 80


def model_path() -> Path:
    """The Smart Turn ONNX file inside the installed pipecat-ai distribution."""
    try:
        dist = importlib.metadata.distribution("pipecat-ai")
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit("Smart Turn needs the pipecat-ai wheel: pip install --no-deps pipecat-ai") from None
    for f in dist.files or ():
        if f.name == MODEL_FILE:
            return Path(str(dist.locate_file(f)))
    raise SystemExit(f"pipecat-ai {dist.version} has no {MODEL_FILE}")


def _mel_filters() -> npt.NDArray[np.float64]:
    """Slaney mel filterbank (80 x 201), as Whisper's feature extractor builds it."""

    def to_mel(f: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.where(f < 1000, 3 * f / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) * 27 / np.log(6.4))

    def to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.where(m < 15, 200 * m / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    edges = to_hz(np.linspace(0.0, float(to_mel(np.array([RATE / 2]))[0]), _N_MELS + 2))
    fft_f = np.linspace(0, RATE // 2, _N_FFT // 2 + 1)
    slopes = edges[None, :] - fft_f[:, None]
    down = -slopes[:, :-2] / np.diff(edges)[:-1]
    up = slopes[:, 2:] / np.diff(edges)[1:]
    bank = np.maximum(0.0, np.minimum(down, up)) * (2.0 / (edges[2:] - edges[:-2]))
    return bank.T


_MELS = _mel_filters()
_HANN = np.hanning(_N_FFT + 1)[:-1]


def features(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Whisper log-mel features (80 x 800) of exactly 8 s of float audio."""
    x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2
    log_spec = np.log10(np.maximum(1e-10, _MELS @ power.T))[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    out: npt.NDArray[np.float32] = ((log_spec + 4.0) / 4.0).astype(np.float32)
    return out


class SmartTurn:
    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session: Any = ort.InferenceSession(
            str(path or model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def complete(self, pcm: npt.NDArray[np.int16]) -> float:
        """P(the speaker has finished) for a turn's audio (its last 8 s are used)."""
        audio = pcm[-WINDOW_SAMPLES:].astype(np.float32) / 32768.0
        if len(audio) < WINDOW_SAMPLES:
            audio = np.pad(audio, (WINDOW_SAMPLES - len(audio), 0))
        out = self._session.run(None, {"input_features": features(audio)[None]})
        return float(np.asarray(out[0]).reshape(-1)[0])
