"""The one exception type that reaches a user as a single line instead of a traceback."""


class ConfigError(Exception):
    """A user mistake: bad config value, missing data, a run directory that cannot be used."""
