"""User-facing errors. The CLI prints their message on one line and exits 2; gate failures exit 1.

Exit codes (README "Exit codes"): 0 passed/done, 1 a gate failed, 2 bad input (one of these errors),
3 internal error (one line; ``--debug`` shows the traceback), 130 interrupted.
"""

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class PwdeployError(Exception):
    """Bad input from the user: the message names the problem and the fix."""

    exit_code = 2


class DataError(PwdeployError):
    """A dataset is missing, malformed or inconsistent with the model."""


class ModelError(PwdeployError):
    """A model file or architecture cannot be loaded as asked."""


class ConfigError(PwdeployError):
    """A configuration file or flag combination is invalid."""


class GateFailed(PwdeployError):
    """An artifact failed the per-group accuracy gate; the message names the failed group(s)."""

    exit_code = 1
