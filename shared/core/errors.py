"""One exception family, each with a one-line message that says what is wrong and what to do.

The CLIs print `str(error)` and exit non-zero; nothing else is ever shown to a user.
"""


class MarslinkError(Exception):
    """Base of every error a user can cause or meet. Exit code 2 unless a subclass says."""
    exit_code = 2

    def __reduce__(self):
        """Rebuilt from its message and fields, not by calling __init__ again: pickle would pass
        a subclass's __init__ the message alone, and an error raised in a `--jobs` worker must
        reach the parent whole."""
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type, args: tuple, fields: dict) -> MarslinkError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(fields)
    return error


class UsageError(MarslinkError):
    """Bad command line, missing input, unwritable output."""


class FormatError(MarslinkError):
    """Not a marslink file, wrong version, truncated or corrupted container."""


class ProfileError(MarslinkError):
    """The numeric environment differs between the two sides, or cannot be set up."""


class ConfigMismatch(MarslinkError):
    """The two sides were started with different run configurations."""


class DivergenceError(MarslinkError):
    """The two models stopped being identical: named with the first step where it showed."""

    def __init__(self, step: int, ours: str, theirs: str, what: str = "sender"):
        self.step = step
        super().__init__(
            f"weights diverged at step {step}: {what} digest {theirs[:16]}, ours {ours[:16]}; "
            f"the stream is corrupted or the two machines do not compute identically (nothing was written)")


class NotANumber(MarslinkError):
    """The model's prediction stopped being a number: its training blew up (a crafted learning
    rate or eps). A NaN has no portable integer frequencies, so no two machines would code it alike."""

    def __init__(self, step: int):
        self.step = step
        super().__init__(
            f"the model's prediction is not a number at step {step}: this configuration's training "
            f"blew up (its learning rate or eps), and no two machines would code it alike (nothing was written)")


class ChecksumError(MarslinkError):
    """Decoded output does not match the original's checksum."""


class LinkFailure(MarslinkError):
    """The link broke: peer lost, peer refused or stopped, or a malformed frame."""
