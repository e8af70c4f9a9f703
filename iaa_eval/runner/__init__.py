"""Runs: the model x task matrix, the request cache and the results files."""
