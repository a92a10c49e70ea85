"""The one exception type for problems the user can cause or fix."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: carries a plain message and a hint.

    The CLI prints these without a traceback and exits with ``exit_code``.
    """

    # Set on the way up by the code that knows them (upgrade, the target search: core/search.py); the CLI reads them.
    report: object = None  # smoke.Report of the checks that failed (transaction)
    models: list | None = None  # models.ModelRow of the model-parity gate that ran before the failure (transaction)
    plan: object = None  # the plan.Plan that failed (upgrade), shown with the error
    tries: list | None = None  # search.Try of every target tried
    inputs: object = None  # resolve.Inputs of a target that did not resolve (plan), and its versions:
    tf_new: str = ""
    tf_old: str = ""
    downgrade: bool = False  # refused because the plan moves a requested package backwards
    build_failed: bool = False  # the new env could not be built from its lock (uv, Poetry): the search's cue

    def __init__(self, message: str, hint: str = "", *, exit_code: int = 2, details: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.details = details

    def log_moved(self, old: object, new: object) -> None:
        """The log this error names moved from ``old`` to ``new`` (the state folder that held it is being removed):
        its words say where the log is now. The words are final text, built before the move by whichever step
        failed (checks, build, search), so the path is replaced in them rather than kept apart as a field."""
        self.hint = self.hint.replace(str(old), str(new))
        self.details = self.details.replace(str(old), str(new))
        if str(new) not in self.hint + self.details:
            self.hint = (self.hint + " " if self.hint else "") + f"The log is kept at {new}."

    def to_dict(self) -> dict:
        return {"error": self.message, "hint": self.hint, "details": self.details}


FS_ERRNOS = frozenset({"ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EBUSY", "ENAMETOOLONG", "ELOOP"})


def from_os_error(exc: OSError) -> UserError | None:
    """The paragraph for a filesystem failure (disk full, read-only, permission, busy), else ``None``.

    Every write tfrebuild makes in its own files can fail this way; the CLI turns such an
    ``OSError`` into this error instead of a traceback.
    """
    import errno
    import os

    name = errno.errorcode.get(exc.errno or 0, "")
    if name not in FS_ERRNOS:
        return None
    where = exc.filename or "a file"
    if exc.filename2:
        where = f"{exc.filename} → {exc.filename2}"
    unchanged = (
        "Whatever was half done is finished or undone by the next tfrebuild command once this is fixed; "
        "`tfrebuild status` shows where the environment stands."
    )
    if name in ("ENOSPC", "EDQUOT"):
        what = "the disk is full" if name == "ENOSPC" else "the disk quota is exhausted"
        return UserError(
            f"tfrebuild could not write {where}: {what}.",
            "Free some space (`tfrebuild gc --yes` deletes old generations and needs no free space; "
            f"`uv cache prune`), then run the command again. {unchanged}",
            exit_code=1,
        )
    if name in ("ENAMETOOLONG", "ELOOP"):  # a path given on the command line or found in a file
        shown = where if len(where) <= 160 else where[:100] + f"… ({len(where)} characters)"
        why = "the path is too long for this system" if name == "ENAMETOOLONG" else "too many symbolic links on the way"
        return UserError(
            f"tfrebuild cannot use {shown}: {why}. Nothing was changed.",
            "Check the path given (--env, --profile, -o) or the file that names it.",
            exit_code=2,
        )
    if name == "EROFS":
        return UserError(
            f"tfrebuild could not write {where}: the filesystem is mounted read-only.",
            "`status`, `history`, `diff`, `doctor` and `plan` work on a read-only filesystem; to change the "
            f"environment, remount it read-write. {unchanged}",
            exit_code=1,
        )
    if name == "EBUSY":
        return UserError(
            f"tfrebuild could not rename {where}: the kernel reports it busy (a mount point?).",
            "tfrebuild swaps environments by renaming them, which a mount point forbids; use an environment "
            f"folder that is not mounted on its own. {unchanged}",
            exit_code=1,
        )
    owner = ""
    try:
        st = os.lstat(exc.filename) if exc.filename else None
        if st is not None:
            import pwd

            owner = f" ({exc.filename} belongs to {pwd.getpwuid(st.st_uid).pw_name})"
    except (OSError, KeyError, TypeError):
        pass
    return UserError(
        f"tfrebuild could not use {where}: permission denied{owner}.",
        f"Run tfrebuild as the user who owns the environment and its state folder. {unchanged}",
        exit_code=1,
    )
