"""Reproducible studies that redraw a figure set and its table in one call."""
