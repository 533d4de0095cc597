"""Errors that name what is wrong with the user's input.

The service maps them to gRPC statuses (INVALID_ARGUMENT, RESOURCE_EXHAUSTED) and
the CLI to exit code 2, so their messages are written for the person who sent
the file, not for us.
"""


class GradhealthError(Exception):
    """Base of every error gradhealth raises on purpose."""


class InvalidCheckpoint(GradhealthError):
    """The checkpoint is not a loadable, safe `.keras` archive."""


class InvalidBatch(GradhealthError):
    """The sample batch does not fit the model or its loss."""


class LimitExceeded(GradhealthError):
    """An input is larger than an operator-configured limit."""


class Cancelled(Exception):
    """The caller went away or ran out of time; the work is dropped."""
