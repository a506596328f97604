"""Rendering of analysis results: terminal tables, markdown, CSV, JSON, plots."""
