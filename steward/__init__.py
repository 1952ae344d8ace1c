"""Steward: lifecycle platform for domain-adapted language models."""

from importlib.metadata import version

from steward.loading import load_model

__all__ = ["load_model"]
__version__ = version("steward")  # pyproject.toml's, as installed
