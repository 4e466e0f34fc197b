"""`python -m tuneline ...`: the CLI, for environments without the `tuneline` script on PATH."""

from tuneline.cli import app

app(prog_name="tuneline")
