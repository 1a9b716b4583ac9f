"""Hostile inputs: single rows, results and values that must never stop a node."""
