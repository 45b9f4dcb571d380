"""The exception tree of opcli and the exit code each one means.

    OpcliError              exit 1   anything opcli reports as a one-line error
    +-- ConfigError         exit 2   bad config file, unset variable, unknown site
    +-- UsageError          exit 2   bad input given on the command line
    +-- RemoteError         exit 1   the other side answered, but with a failure
    +-- UnreachableError    exit 3   the other side could not be reached at all

Core functions raise these; only ``opcli.cli`` turns them into ``opcli: error: ...`` and an
exit code. Messages never contain a token.
"""

from __future__ import annotations

from collections.abc import Callable


class OpcliError(Exception):
    """Base of every error opcli reports without a traceback."""

    exit_code = 1


class ConfigError(OpcliError):
    """The config could not be used; ``problems`` holds every ``FILE:LINE:COL: problem`` line."""

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(OpcliError):
    """The command line asked for something impossible (missing file, nothing to send...)."""

    exit_code = 2


class RemoteError(OpcliError):
    """The other side answered with a failure: non-2xx, an envelope status 0, a broken contract."""

    exit_code = 1


class UnreachableError(OpcliError):
    """The other side could not be reached: refused, DNS, TLS, timeout, dropped connection.

    ``never_sent`` when the request surely did not leave (no connection was made).
    """

    exit_code = 3
    never_sent = False


class Signalled(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived while a command ran: it stops as the signal asks, exit 128+N.

    A KeyboardInterrupt, so that it goes where Ctrl-C goes: no ``except Exception`` swallows it,
    and asyncio lets it through its callbacks and transports (any other exception a signal handler
    raises in the middle of a socket write is taken as the transport's failure, and logged with a
    traceback). Catch it before KeyboardInterrupt wherever the two differ (the exit code).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


def raise_signalled(signum: int, frame: object) -> None:
    """A signal handler: raise ``Signalled`` where the main thread is."""
    raise Signalled(signum)


def raise_on(*signums: int) -> Callable[[], None]:
    """Make these signals raise ``Signalled`` (only the main thread can set handlers: elsewhere,
    nothing changes); returns what puts the previous handlers back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.signal(signum, raise_signalled) for signum in signums}

    def undo() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python

    return undo
