"""Audit reports and model cards: what a reviewer reads, built from the registry alone."""
