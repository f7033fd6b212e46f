"""Placeholder: filled in by its family author."""
