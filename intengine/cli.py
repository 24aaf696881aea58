"""Command-line plumbing shared by the three CLIs (torch-free, so the engine can use it).

Every expected failure ends in exactly one `error: ...` line on stderr and exit status 2.
"""
import sys

import click


def fail(message):
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def require_torch(tool):
    """One line, not a traceback, where torch is missing (an engine-only install)."""
    import importlib.util

    def absent(name):
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in ("torch", "torchvision") if absent(m)]
    if missing:
        fail(f"{tool} needs {' and '.join(missing)}, which this install lacks (the engine alone needs "
             f"neither): pip install 'lowbit-ptq[train]'")


def run(command):
    """Run a click command; usage errors, like every other expected failure, end in one line."""
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted")
    except click.UsageError as e:              # keep click's pointer to the help
        hint = f" (try '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        fail(e.format_message() + hint)
    except click.ClickException as e:
        fail(e.format_message())
