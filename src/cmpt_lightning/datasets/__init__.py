"""Datasets: files and parsing, one family per file."""
