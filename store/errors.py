"""Errors the store raises. Each message is one line a user can act on."""


class StoreError(Exception):
    """The database could not be used (missing, corrupt, locked, too new)."""


class RefusedError(StoreError):
    """An operation was refused by a rule (unknown user, invalid pattern, ...)."""


class BusyError(StoreError):
    """Another process held the database's write lock for longer than the busy timeout."""


class InvalidValueError(RefusedError):
    """A value broke a rule of what may be written (a name, a password, a pattern, a network, a limit): the
    caller's mistake, not the registry's state. The CLI reports it as a usage error (exit 2)."""
