"""The command line (Typer): app.py registers the commands of search.py, results.py and
instruments.py; options.py holds the options they share; render.py and progress.py draw."""

from __future__ import annotations

from hpsearch.cli.app import app, main, run

__all__ = ["app", "main", "run"]
