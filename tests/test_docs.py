"""The docs are checked against the program: every `facefind ...` command the README and docs/ show exists,
with the options they give it (a renamed command or option fails here, not in a reader's terminal)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from facefind.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) of every facefind command in an inline code span or a shell block line."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        spans = re.findall(r"`(facefind [^`\n]+)`", text)
        blocks = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL))
        lines = [line.split("  #")[0].strip() for line in re.findall(r"^\s*(?:\.venv/bin/)?(facefind [^\n]+)$", blocks,
                                                                     flags=re.MULTILINE)]
        found += [(doc.name, command) for command in dict.fromkeys(spans + lines)]
    return found


def _tokens(command: str) -> list[str]:
    command = re.sub(r"[\[\]]", " ", command)  # [--repair] [--json]: optional parts are still parts
    try:
        return shlex.split(command)
    except ValueError:  # an unbalanced quote in prose: words are enough to find commands and options
        return command.split()


def resolve(command: str) -> tuple[object, list[str]]:
    """The click command a documented line runs, and the option names it uses; a word where a subcommand
    should be that is none raises LookupError."""
    current = typer.main.get_command(app)  # a click command tree (typer may bundle its own click)
    options, tokens = [], _tokens(command)[1:]
    while tokens[:1] and tokens[0].startswith("--"):  # `facefind --library DIR users add ...`
        root_option = tokens.pop(0)
        if "=" not in root_option and tokens:
            tokens.pop(0)
    for token in tokens:
        if token.startswith("--"):
            options.append(token.split("=")[0])
        elif hasattr(current, "commands") and not options:
            names = token.split("/")  # `keys create/list/revoke`
            if not all(name in current.commands for name in names):
                raise LookupError(token)
            current = current.commands[names[0]]
    return current, options


@pytest.mark.parametrize(("doc", "command"), documented_commands(), ids=lambda value: value[:60])
def test_a_documented_command_exists_with_its_options(doc, command):
    try:
        found, options = resolve(command)
    except LookupError as unknown:
        pytest.fail(f"{doc}: `{command}`: facefind has no command {unknown}")
    known = {name for parameter in found.params for name in getattr(parameter, "opts", [])}
    known |= {name for parameter in found.params for name in getattr(parameter, "secondary_opts", [])}
    if hasattr(found, "commands"):
        known |= {"--help"}
    root_options = {name for parameter in typer.main.get_command(app).params for name in parameter.opts}
    unknown = [option for option in options if option not in known | root_options | {"--help"}]
    assert not unknown, f"{doc}: `{command}`: {found.name} has no option {', '.join(unknown)}"


def test_the_docs_show_commands_at_all():
    assert len(documented_commands()) > 30
