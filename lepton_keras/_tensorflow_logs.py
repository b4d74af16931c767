"""Imports TensorFlow without the info lines its C++ start-up prints before its logging is set up.

`import tensorflow` prints, straight to file descriptor 2 and before TF_CPP_MIN_LOG_LEVEL is
read, "All log messages before absl::InitializeLog() ..." and info lines (the oneDNN notice,
"Could not find cuda drivers"); the first device query of a machine without a GPU adds
"failed call to cuInit". `import_tensorflow` drops exactly those while it imports TensorFlow
and lists its devices, and passes every other line (warnings, errors) on unchanged. Set
TF_CPP_MIN_LOG_LEVEL=0 to see everything.

`quiet_tensorflow_logs` is what the tutorials and the `lepton-keras` command call before
TensorFlow loads: unless the user set TF_CPP_MIN_LOG_LEVEL, it sets it to 2 (no C++ info or
warnings).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_LOG_LINE = re.compile(rb"^[IWEF]\d{4} ")
_INFO_LINE = re.compile(rb"^I\d{4} ")
_BEFORE_LOGGING = b"WARNING: All log messages before absl::InitializeLog() is called"
_NO_GPU = b"failed call to cuInit"


def quiet_tensorflow_logs(environment=None) -> None:
    """TF_CPP_MIN_LOG_LEVEL=2 in `environment` (default os.environ) unless set there:
    TensorFlow's C++ code then prints errors only. The launcher passes its workers' environment."""
    (os.environ if environment is None else environment).setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def startup_noise(lines: list[bytes], *, has_gpu: bool) -> list[bool]:
    """Which of the captured `lines` are start-up noise: info lines with their continuation
    lines, the line announcing them, and the failed CUDA initialisation where there is no GPU."""
    noise, in_info = [], False
    for line in lines:
        if _LOG_LINE.match(line):
            in_info = bool(_INFO_LINE.match(line))
        elif line.startswith(_BEFORE_LOGGING):
            in_info = True
        noise.append(in_info or (not has_gpu and _LOG_LINE.match(line) is not None and _NO_GPU in line))
    return noise


def import_tensorflow():
    """`import tensorflow`, without its start-up noise unless TF_CPP_MIN_LOG_LEVEL is "0"."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow

        return tensorflow
    try:
        saved_stderr = os.dup(2)
    except OSError:  # no file descriptor 2 to filter
        import tensorflow

        return tensorflow
    has_gpu = True
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            has_gpu = bool(tensorflow.config.list_physical_devices("GPU"))
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            kept = [line for line, noise in zip(lines, startup_noise(lines, has_gpu=has_gpu)) if not noise]
            os.write(2, b"".join(kept))
    return tensorflow
