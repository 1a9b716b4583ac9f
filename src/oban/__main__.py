"""``python -m oban`` runs the CLI."""

from .cli import main

main()
