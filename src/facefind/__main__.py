"""`python -m facefind` runs the CLI."""

from facefind.cli import run

run()
