"""Command handlers, imported lazily by `steward.cli`."""
