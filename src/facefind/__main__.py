"""`python -m facefind` runs the CLI."""

from facefind.cli import app

app(prog_name="facefind")
