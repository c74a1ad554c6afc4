"""The one error type users see: a message that names the file, line or param at fault."""


class PipelineError(Exception):
    """Bad input or configuration. The message says what and where; no traceback needed."""
