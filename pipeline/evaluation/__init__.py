"""Evaluation through ir-measures and the report (Markdown, JSON, plots)."""
