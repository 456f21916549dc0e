"""Errors a user can act on. The CLI prints them without a traceback."""


class GaspError(Exception):
    """Base class: the message names the file, field or value to change."""


class BadInputError(GaspError):
    """A file or record cannot be used (missing, corrupt, non-finite, wrong shape)."""


class ConfigError(GaspError):
    """A configuration value is invalid; the message names the field/flag."""
