"""One exception family and the exit codes it maps to (0 ok, 1 a gate was violated, 2 bad usage/input)."""

from __future__ import annotations

EXIT_OK = 0
#: A ``--min-snr`` / ``--max-mse`` gate (or a regression check) was violated.
EXIT_VIOLATION = 1
#: Bad usage, bad input, a missing device or an internal error.
EXIT_ERROR = 2


class FqtoolError(Exception):
    """An error the user can act on: ``str(err)`` is one line naming the file/tensor and what to do."""

    exit_code = EXIT_ERROR


class InputError(FqtoolError):
    """A file or tensor cannot be read: missing, corrupt, truncated, unsupported, empty."""


class DeviceError(FqtoolError):
    """The requested device (cuda, cuda:N, npu) is not available."""


class UsageError(FqtoolError):
    """Options that do not make sense together, an unknown format, a bad glob."""
