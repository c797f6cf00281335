"""Error handling shared by the command lines (``python -m lmgnn_fast.train``,
``lmgnn_fast.evaluate``, ``lmgnn_fast.datasets``).

An error the user can fix (a data format error, a bad configuration value, a missing or
unwritable file) is printed as one line, ``error: <message>``, on stderr, and the command
exits with status 2. Ctrl-C prints one line (``interrupted``, plus a hint such as
``resume with --resume``) and exits with status 130 (128 + SIGINT, the shell's convention);
output cut short by its reader (``| head``) exits with 141 (128 + SIGPIPE) silently.
Any other exception is a bug: one line naming its type, exit status 1. ``--debug`` on the
command line or ``LMGNN_DEBUG=1`` in the environment re-raises instead, with the full
traceback.

This module sits below every command line and imports no command's package: each command
passes the error types of its own layer in ``user_errors``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from lmgnn_fast.io.errors import GraphFormatError, OptionError, PathError

__all__ = ["EXIT_OK", "EXIT_BUG", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE", "USER_ERRORS",
           "ArgumentParser", "UsageError", "debug_requested", "run_cli"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away (``| head``)

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LMGNN_DEBUG"


class UsageError(ValueError):
    """The command line itself is malformed (a flag without its value, a bad number)."""


# Errors every command reports as one line: the data, the loader options, names that would
# leave their folder and the file system.
USER_ERRORS: tuple[type[BaseException], ...] = (GraphFormatError, OptionError, PathError, UsageError, OSError)


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True when ``--debug`` is in ``argv`` or ``LMGNN_DEBUG`` is set to a non-empty value
    other than ``0``."""
    env = os.environ.get(DEBUG_ENV, "")
    return bool(env and env != "0") or DEBUG_FLAG in (argv or ())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text and isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    # A message is one line: fold any line breaks of the underlying library's text.
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(exc).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, *,
            user_errors: tuple[type[BaseException], ...] = (),
            interrupts: tuple[type[BaseException], ...] = (),
            interrupt_hint: str = "", stderr=None) -> int:
    """Run ``main(argv)`` and turn its exceptions into one-line messages and exit codes.

    Args:
        main: the command; returns its exit status (``None`` = 0).
        argv: the arguments (default ``sys.argv[1:]``); ``--debug`` is removed before
            ``main`` sees them.
        user_errors: error types of the command's own layer reported as user errors,
            in addition to :data:`USER_ERRORS`.
        interrupts: exception types treated like Ctrl-C (besides ``KeyboardInterrupt``).
        interrupt_hint: appended to ``interrupted`` (``"resume with --resume"``).
        stderr: where messages go (default ``sys.stderr``).

    Returns:
        the exit status: ``main``'s, 2 for a user error, 130 for an interrupt, 141 (no
        message) when the output's reader went away (``| head``), 1 for an unexpected
        exception.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    err = stderr or sys.stderr
    try:
        status = main(argv)
        return EXIT_OK if status is None else int(status)
    except SystemExit:
        raise
    except BrokenPipeError:
        if debug:
            raise
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (KeyboardInterrupt, *interrupts) as exc:
        if debug:
            raise
        hint = f"; {interrupt_hint}" if interrupt_hint else ""
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else _one_line(exc)
        print(f"{what}{hint}", file=err, flush=True)
        return EXIT_INTERRUPTED
    except (*USER_ERRORS, *user_errors) as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=err, flush=True)
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug: still one line, with the way to see more
        if debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (rerun with {DEBUG_FLAG} or "
              f"{DEBUG_ENV}=1 for the traceback)", file=err, flush=True)
        return EXIT_BUG


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")
