"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a file, row, key or value that is not what was expected.

    The message is shown as is, on one line, without a traceback, so it must name the file, row or
    key at fault and say what was expected.
    """
