"""The command reference (``docs/cli.md``), generated from the commands' own ``--help``.

``python -m exporter.cli.reference > docs/cli.md`` rewrites it; a test fails when the file and the commands
differ, so the reference cannot drift from the code.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

WIDTH = 110  # fixed, so the file does not depend on the terminal that generated it
HEADER = """# Command reference

Generated from each command's `--help` by `python -m exporter.cli.reference > docs/cli.md`; do not edit by
hand. Every command also takes `-h`.
"""


def _help(*args: str) -> str:
    from exporter.cli.app import cli_command

    out = io.StringIO()
    with redirect_stdout(out):
        try:
            cli_command()(
                [*args, "--help"],
                prog_name="exporter",
                standalone_mode=False,
                terminal_width=WIDTH,
                max_content_width=WIDTH,
            )
        except SystemExit:
            pass
    return out.getvalue().rstrip()


def markdown() -> str:
    """The whole reference: the root's help, then each command's, in ``exporter --help`` order."""
    from exporter.cli.app import COMMANDS

    parts = [HEADER, "## exporter\n", "```\n" + _help() + "\n```\n"]
    for name, _ in COMMANDS:
        parts += [f"## exporter {name}\n", "```\n" + _help(name) + "\n```\n"]
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")
