"""DeadlineUI.Controls.Scripting.DeadlineScriptDialog: only ShowMessageBox, which Monitor scripts
use for a plain message (`dialog.ShowMessageBox(message, title)`). Without a screen, each message
box is appended to `shown` as (title, message), so a test reads what the user would have seen."""
from __future__ import annotations

__all__ = ["DeadlineScriptDialog"]

shown: list[tuple[str, str]] = []


class DeadlineScriptDialog:
    """The Monitor's script dialog (no controls here: a message box only)."""

    def ShowMessageBox(self, message: str, title: str) -> str:
        shown.append((str(title), str(message)))
        return "OK"
