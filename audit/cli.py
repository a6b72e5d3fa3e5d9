"""The ``cxr-audit`` command line.

Exit codes: 0 all gating checks pass (or the command succeeded); 1 a gating check failed,
a required check could not run, or ``data validate`` found problems; 2 invalid input or
config; anything else is a crash (a bug: please report it with the traceback).
"""

from __future__ import annotations

import sys

import typer

from audit.errors import AuditError

app = typer.Typer(
    name="cxr-audit",
    help="Audit a chest X-ray COVID-19 classifier for shortcut learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Console entry point: expected failures become a message and an exit code."""
    try:
        app(standalone_mode=False)
    except AuditError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as error:  # click usage errors carry their own exit code (2)
        from click import ClickException

        if isinstance(error, ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
