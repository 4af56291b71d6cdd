"""Errors that tell the user what is wrong and how to fix it.

`PermanentError`s are not worth retrying: the same input fails the same way every time.
"""


class PipelineError(Exception):
    """A failure the user can act on; the message says what is wrong and what to do."""


class PermanentError(PipelineError):
    """A failure that retrying cannot fix (bad data, bad parameters, corrupt state)."""


class BundleMissingError(PermanentError):
    pass


class ChecksumMismatchError(PermanentError):
    pass


class BundleTruncatedError(ChecksumMismatchError):
    """A bundle file shorter than the registered size (an interrupted copy or download)."""


class SplitValidationError(PermanentError):
    pass
