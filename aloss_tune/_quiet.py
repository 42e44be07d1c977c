"""Import Keras without TensorFlow's native start-up chatter on stderr.

TensorFlow's C++ runtime writes log lines straight to file descriptor 2 when it loads, even with
``TF_CPP_MIN_LOG_LEVEL=3``. A command-line error must be one readable line, so the package imports Keras
(if nobody has yet) with descriptor 2 pointed at /dev/null; Python exceptions raised by the import are
still raised.
"""

from __future__ import annotations

import os
import sys


def import_keras_quietly() -> None:
    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters)
        import keras  # noqa: F401

        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
