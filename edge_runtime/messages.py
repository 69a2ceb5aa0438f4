"""One printer for user-facing errors, warnings and notes: escaped, so `[onnx]` in a message stays."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

_STYLE = {"error": "red", "warning": "yellow", "note": "yellow", "skipped": "yellow", "gate failed": "red"}


def print_message(console: Console, label: str, message: object) -> None:
    """Print `label: message` with the label styled and every character of the message literal.

    Rich reads `[...]` as markup, so an unescaped `pip install 'edge-seg[onnx]'` would print as
    `pip install 'edge-seg'`; messages carry file names and hints and are always escaped here.
    """
    style = _STYLE.get(label, "bold")
    console.print(f"[{style}]{escape(label)}:[/] {escape(str(message))}", soft_wrap=True)


def print_error(console: Console, message: object) -> None:
    """`error: message` (escaped)."""
    print_message(console, "error", message)


def print_warning(console: Console, message: object) -> None:
    """`warning: message` (escaped)."""
    print_message(console, "warning", message)
