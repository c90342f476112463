"""The Docker sandbox: one disposable, hardened container per goal.

engine.py connects to Docker, image.py builds the sandbox image, container.py
owns a container's lifecycle and labels, channel.py is the byte channel to the
runtime inside, executor.py puts them together behind the Executor interface.
"""
