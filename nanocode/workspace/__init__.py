"""Workspaces: how a goal's container shares the project (bind, overlay), change sets, and applying them."""
