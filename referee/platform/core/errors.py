"""Typed errors a user can cause. Each message says what was wrong, where, and what to do."""

from __future__ import annotations


class RefereeError(Exception):
    """Base class for every error referee reports to a user without a traceback.

    ``error`` is a stable code for machines (``--json`` output, the web API)."""

    exit_code = 1
    error = "error"


class SpecError(RefereeError):
    """A competition spec is invalid: names the file, the field and the problem."""

    error = "spec_invalid"

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = str(path)
        self.problems = problems
        lines = [f"{self.path}: invalid competition spec"]
        lines += [f"  - {field}: {msg}" if field else f"  - {msg}" for field, msg in problems]
        super().__init__("\n".join(lines))


class SubmissionRejected(RefereeError):
    """A submission failed intake validation; nothing was stored.

    ``code`` says why (``bad_value``, ``build_refused``...). ``charged`` marks a rejection that counts
    toward the team's limits like a submission (a refused or failed build: the engine did the work);
    ``sha256`` is then the content it was about."""

    error = "submission_rejected"

    def __init__(self, message: str, *, line: int | None = None, source: str | None = None,
                 hint: str | None = None, code: str = "invalid"):
        self.line = line
        self.source = source
        self.hint = hint
        self.code = code
        self.charged = False
        self.sha256: str | None = None
        where = ""
        if source:
            where = source + (f", line {line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        text = where + message
        if hint:
            text += f" ({hint})"
        self.detail = message
        super().__init__(text)


class LimitExceeded(RefereeError):
    """A submission limit (per day, total, concurrent) would be exceeded.

    ``retry_after`` is the number of seconds until the limit frees up when that is known (the
    24-hour window), else None (a total limit; a concurrent one frees when a submission finishes).
    """

    def __init__(self, message: str, *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)

    error = "limit_exceeded"


class NotFound(RefereeError):
    """A competition, submission or plugin that was asked for does not exist."""

    error = "not_found"


class Conflict(RefereeError):
    """The request clashes with the current state: a name that is taken, a user already in a team,
    a team that is full, a submission that already finished."""


class NotAllowed(RefereeError):
    """The caller is known but may not do this (not registered, not an organiser, disqualified)."""


class PluginError(RefereeError):
    """A plugin failed to load or misbehaved."""

    error = "plugin_error"


class BudgetExceeded(RefereeError):
    """Dispatching more work would exceed a cost budget."""

    error = "budget_exceeded"


class BackendError(RefereeError):
    """A backend could not be reached or configured."""

    error = "backend_error"


class BackendUnavailable(BackendError):
    """A backend's control plane does not answer: throttled, timed out, unreachable, or its credentials
    expired or were refused. Never a submission's fault: the controller backs off (with jitter) and tries
    again without spending any submission's retries. ``hint`` says what to fix if it lasts;
    ``retry_after`` (seconds) is how long the backend asked to be left alone, when it said."""

    error = "backend_unavailable"
    exit_code = 4

    def __init__(self, message: str, *, hint: str = "", retry_after: float | None = None):
        self.hint = hint
        self.retry_after = retry_after
        self.detail = message
        super().__init__(f"{message} ({hint})" if hint else message)
