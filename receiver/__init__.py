"""Bob, on Mars: decodes the bits with an identical model and keeps it in lockstep."""


def main(argv: list[str] | None = None) -> int:
    """The `bob` command (shared.app.entry: a Ctrl-C while it loads is one line too)."""
    from shared.app.entry import run_command
    return run_command("bob", "receiver.cli", argv)
