"""nanocode: a small coding agent that can run its tools in a disposable sandbox."""

__version__ = "0.1.0"
