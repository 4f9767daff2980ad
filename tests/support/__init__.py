"""Helpers shared by the test packages (launching ranks, tiny datasets)."""
