"""Network by name: a goal's sandbox on a network with no route out but an egress proxy that lets
the allowed hosts through (proxy.py, the program; allowlist.py, the rules and presets; goal.py, the
network and the proxy's container for one goal; audit.py, what went through), and the host's trust
store for any sandbox with a network (trust.py).
"""
