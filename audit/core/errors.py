"""Errors the CLI turns into a clear message and an exit code instead of a traceback."""


class AuditError(Exception):
    """Base class of expected, user-facing failures. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(AuditError):
    """Invalid input: a manifest, image, config or policy that cannot be used (exit 2).

    The message must name the file or key, what was expected and what arrived.
    """

    exit_code = 2


class WeightsUnavailableError(InputError):
    """Pretrained weights could not be obtained (offline download, missing local file)."""
