"""The one exception type for problems the user can cause or fix."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: carries a plain message and a hint.

    The CLI prints these without a traceback and exits with ``exit_code``.
    """

    def __init__(self, message: str, hint: str = "", *, exit_code: int = 2, details: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.details = details

    def to_dict(self) -> dict:
        return {"error": self.message, "hint": self.hint, "details": self.details}
