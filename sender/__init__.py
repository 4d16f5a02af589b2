"""Alice, on Earth: reads the text, predicts it, codes it, sends the bits."""
import sys


def main(argv: list[str] | None = None) -> int:
    """The `alice` command. Its modules load and its options are read in a few tenths of a
    second, before cli.run_main stands guard; a Ctrl-C meanwhile is the same one line as a
    Ctrl-C later, not a traceback."""
    try:
        from .cli import main as run
        return run(argv)
    except KeyboardInterrupt:             # run_main turns every later one into its line and 130
        print("alice: interrupted; no output was written", file=sys.stderr)
        return 130
