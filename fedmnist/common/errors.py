"""The exception types that reach the user as a single line (or as none, when it was said already)."""


class UserError(Exception):
    """A problem the user can fix (bad flag, busy port, missing data, ...).

    Entry points print ``error: <message>`` and exit with status 2 instead of
    a traceback; anything else is a bug and keeps its traceback.
    """


class AlreadySaid(UserError):
    """A failure whose ``error:`` line the user has seen already (a server's, streamed by ./run.sh): exit 2 quietly."""
