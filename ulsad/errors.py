"""User-facing errors: one class, so the CLI and the app can show a clear line instead of a trace.

A message that tells the user which setting to change names it by a placeholder, `{out_dir}`,
with how a Python caller spells it (`ULSADError("... {restart} ...", restart="restart=True")`).
The library never knows command-line flags: `str(error)` reads as Python, and the CLI renders
the same error with its own flag names (`error.render({"restart": "--restart"})`).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ULSADError"]


class ULSADError(ValueError):
    """A problem with the user's input (data, image, checkpoint) that the message explains how to fix."""

    def __init__(self, message: str, **options: str) -> None:
        self.template, self.options = message, options
        super().__init__(self.render({}))

    def render(self, spelling: Mapping[str, str]) -> str:
        """The message with each option spelled as in `spelling` (else as a Python caller would).

        Placeholders are replaced literally, so paths with braces in the message stay as they are."""
        text = self.template
        for name, python_spelling in self.options.items():
            text = text.replace("{" + name + "}", spelling.get(name, python_spelling))
        return text
