"""An argparse parser whose errors the command turns into its one `error:` line (exit 2)."""
import argparse


class ArgumentError(Exception):
    """A bad command line; the message says which flag and what is wrong."""


class Parser(argparse.ArgumentParser):
    """Raises ArgumentError instead of printing usage and exiting, so that every user error
    of a command ends the same way (`error: ...`, exit status 2)."""

    def error(self, message):
        raise ArgumentError(message)
