"""Command-line plumbing shared by the three CLIs (torch-free, so the engine can use it).

Every expected failure ends in exactly one `error: ...` line on stderr and exit status 2.
"""
import sys

import click


def fail(message):
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


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
