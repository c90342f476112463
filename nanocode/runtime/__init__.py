"""The tool runtime: one process per goal that runs commands and file operations.

`server.py` is that process; `client.py` speaks to it over any byte channel
(pipes on the host, the exec socket in the sandbox).
"""
