"""Errors a user can act on, kept apart from bugs.

A ``UserError`` carries one short line meant for a person (CLI: stderr and exit 2;
bot: an ephemeral message). Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input or a missing resource: the message is shown to the user as is."""


class BadImage(UserError):
    """A file that is not a readable image, or one over the size limits."""


class ModelFileMissing(UserError):
    """A model file is not on disk and could not be fetched."""


class UnsafeCheckpoint(UserError):
    """A checkpoint whose pickle would run code and holds no loadable tensors."""


class Cancelled(Exception):
    """Raised inside a generation when its ``should_stop`` callback says so."""
