"""User-facing errors: one class, so the CLI and the app can show a clear line instead of a trace."""


class ULSADError(ValueError):
    """A problem with the user's input (data, image, checkpoint) that the message explains how to fix."""
