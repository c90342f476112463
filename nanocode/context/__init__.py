"""The conversation within the model's context window: the window, the estimate, compaction."""

from nanocode.context.compaction import apply
from nanocode.context.manager import Context, Tokens
from nanocode.context.window import DEFAULT_WINDOW, Window, resolve

__all__ = ["DEFAULT_WINDOW", "Context", "Tokens", "Window", "apply", "resolve"]
