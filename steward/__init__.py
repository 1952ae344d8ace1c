"""Steward: lifecycle platform for domain-adapted language models."""

from steward.loading import load_model

__all__ = ["load_model"]
__version__ = "0.1.0"
