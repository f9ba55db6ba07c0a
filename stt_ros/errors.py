"""Errors shared by the library and the `stt` command; a leaf module so anything may import it."""


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""
