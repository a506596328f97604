"""CLI subcommands: each module has register(subparsers) and run(args)."""


def stdout_console():
    """A rich Console for standard output. Piped or redirected output (a log file, CI)
    is not a terminal and would be cut to 80 columns, truncating wide tables to "…";
    it gets 200 columns instead (a table still takes only the width it needs)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    return console
