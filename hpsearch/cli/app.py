"""The hpsearch command line: registers the commands and turns every error into one line at the edge.

Each command parses, calls one core function and renders. Usage and input
errors become one `Error: ...` line on stderr with exit code 2 (no traceback
unless --debug); data goes to stdout, progress and warnings to stderr. The
library's errors name settings (`$workers`); here they are spelled as flags.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from hpsearch import __version__
from hpsearch.cli import dashboard, init, instruments, logs, manage, recipe, results, search, slurm
from hpsearch.cli.options import flag
from hpsearch.errors import HpsearchError, JournalDamaged, StageExists, StageNotFound, StudyNotFound

app = typer.Typer(
    name="hpsearch",
    help="Coarse-to-fine hyperparameter search for PyTorch models.\n\n"
    "Example: hpsearch coarse studies/digits_mlp.toml && hpsearch refine digits_mlp",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for command in (
    init.init,
    search.coarse,
    search.refine,
    recipe.search,
    recipe.final,
    results.leaderboard,
    results.studies,
    search.worker,
    slurm.slurm,
):
    app.command()(command)
for command in (instruments.sanity,):
    app.command()(command)
app.command("lr-find")(instruments.lr_find)
for command in (results.curves, results.report, dashboard.dashboard, logs.logs, manage.delete, manage.repair):
    app.command()(command)

_state = {"debug": False}
NO_STUDY_ADVICE = "run `hpsearch coarse STUDY_FILE` first, or pass --dir/--storage"


def _version(value: bool) -> None:
    if value:
        print(f"hpsearch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Coarse-to-fine hyperparameter search for PyTorch models.

    Example: hpsearch coarse studies/digits_mlp.toml && hpsearch refine digits_mlp
    """
    _state["debug"] = debug or _state["debug"]


def message(error: HpsearchError) -> str:
    """A library error as the command line says it: settings as flags, plus what to run next."""
    text = error.render(flag)
    if isinstance(error, StudyNotFound) and not isinstance(error, StageNotFound):
        text += f"; {NO_STUDY_ADVICE}"
    if isinstance(error, JournalDamaged):
        text += f"; run `hpsearch repair {error.path.parent.name}` (with --storage {error.path} for a .journal storage)"
    if isinstance(error, StageExists):
        text += "; to start over: hpsearch delete NAME (or --stage STAGE for the latest stages)"
    return text


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code; every error becomes one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv or os.environ.get("HPSEARCH_DEBUG") == "1"
    try:
        result = app(args=argv, prog_name="hpsearch", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print(search.INTERRUPTED_MESSAGE, file=sys.stderr)
        return 130
    except HpsearchError as e:
        _error(message(e))
        return e.exit_code
    except typer.TyperException as e:  # usage errors: unknown flag, bad value, missing argument
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            return 0
        command = ctx.command_path if ctx is not None else "hpsearch"
        _error(f"{e.format_message()} (see `{command} --help`)")
        return 2
    except Exception as e:
        _error(unexpected(e))
        return 1


def unexpected(e: BaseException) -> str:
    """One line for an error nobody foresaw: the real cause (a database that went away is said so, not
    Optuna's generic 'invalid data in the commit'), and the --debug hint unless --debug was given."""
    chain = [e]
    while chain[-1].__cause__ is not None or (chain[-1].__context__ is not None and not chain[-1].__suppress_context__):
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]  # one is set (the while)
        if len(chain) > 20:
            break
    database = [x for x in chain if type(x).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "psycopg2")]
    hint = "" if _state["debug"] else " (run with --debug for the traceback)"
    if database:
        root = database[-1]
        first = str(getattr(root, "orig", None) or root).strip().splitlines()
        reason = first[0] if first else type(root).__name__
        return (
            f"the study's database stopped answering ({type(root).__name__}: {reason}); completed trials are kept: "
            f"run the same command again once it is back{hint}"
        )
    return f"unexpected {type(e).__name__}: {e}{hint}"


def _error(text: str) -> None:
    from hpsearch.store.passwords import mask_url

    if _state["debug"]:
        # A driver's traceback can quote the storage URL: mask it there too.
        print(mask_url(traceback.format_exc()), file=sys.stderr, end="")
    print(f"Error: {mask_url(text)}", file=sys.stderr)


def main() -> None:
    code = run()
    _exit(code)
    sys.exit(code)


def _exit(code: int) -> None:
    """End the process now, skipping the interpreter's teardown of every module (Optuna, pandas,
    SQLAlchemy: about half a second; a second and more with torch in this process, --workers 0).
    What a normal exit guarantees still happens: atexit handlers (logging's flush, temporary
    folders, coverage), flushed streams. Returns instead (a normal exit) under a profiler or a
    debugger (they write their results after the program ends), while a non-daemon thread runs (a
    normal exit waits for it), or when a stream cannot be flushed (a closed pipe)."""
    import atexit
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)
