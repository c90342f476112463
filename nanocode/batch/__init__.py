"""Many goals, unattended, in parallel: each in a sandbox and a workspace of its own (`nanocode batch`)."""
