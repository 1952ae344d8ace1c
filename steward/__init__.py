"""Steward: lifecycle platform for domain-adapted language models."""

from steward.loading import load_model

__all__ = ["load_model"]
# pyproject.toml's `version`, kept in step by a test; not read from the installed metadata at run time, because
# importing importlib.metadata adds about 30 ms to every command's start-up (measured with -X importtime)
__version__ = "0.1.0"
