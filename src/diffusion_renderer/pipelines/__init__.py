"""Pipelines: sampling, condition assembly, inverse and forward rendering."""
