"""Exceptions of the evaluation package: one-line messages meant for the user."""


class EvalError(Exception):
    """Evaluation failed (unreadable file, missing optional package, ...). CLI exit status 1."""

    exit_code = 1


class UsageError(EvalError):
    """Bad arguments or input layout (missing folder, no audio files, bad TSV). CLI exit status 2."""

    exit_code = 2
