"""Steward: lifecycle platform for domain-adapted language models."""

__version__ = "0.1.0"
