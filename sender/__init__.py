"""Alice, on Earth: reads the text, predicts it, codes it, sends the bits."""


def main(argv: list[str] | None = None) -> int:
    """The `alice` command (shared.app.entry: a Ctrl-C while it loads is one line too)."""
    from shared.app.entry import run_command
    return run_command("alice", "sender.cli", argv)
