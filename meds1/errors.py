"""Errors a user can fix from the command line: `run.py` prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input or a missing prerequisite; the message says what to do."""


class MissingInputError(UserError):
    """A stage's inputs do not exist yet; the message names the stage to run first."""


class StageBusyError(UserError):
    """Another process is running the same stage of the same experiment."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a stage; the message says what was kept and the command that resumes (exit 130).
    Still a KeyboardInterrupt, so no `except Exception` on the way up swallows it."""


class OutputConflictError(UserError):
    """A complete output made with another config is where this run would write (or read) it."""
