"""Errors a user can cause. Each carries one sentence naming the file, the field and the fix."""


class UserError(Exception):
    """Bad input from the user: the CLI prints the message alone and exits with status 2."""


class DataError(UserError):
    """A data file, record or image is missing or malformed."""


class ConfigError(UserError):
    """A configuration value, method, sequence or model name is wrong."""


class MetricError(UserError):
    """A metric cannot run here: an optional package or tool it needs is missing."""


def first_problem(error) -> tuple[str, str]:
    """(dotted field path, message) of a pydantic ``ValidationError``'s first problem: the one
    sentence every bad-input error reports."""
    first = error.errors()[0]
    return ".".join(str(part) for part in first["loc"]) or "(top level)", first["msg"]
