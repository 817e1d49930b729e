"""The one exception type that reaches the user as a single line."""


class UserError(Exception):
    """A problem the user can fix (bad flag, busy port, missing data, ...).

    Entry points print ``error: <message>`` and exit with status 2 instead of
    a traceback; anything else is a bug and keeps its traceback.
    """
