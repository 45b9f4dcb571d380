"""Raw request bodies kept with the token's value cut out: what ``--save-dir`` saves and ``--forward`` sends.

While a body streams in, ``RawBody`` writes its bytes -- to a file of ``--save-dir`` under a
generated name, else to a temporary file that stays in memory up to ``SPOOL`` bytes -- leaving
out the value of every text field that carries a token: the ``token`` field whatever its value,
and any other field whose value is the listener's token. No token is ever written to disk.
``token_at`` lists where in the written bytes each value was cut, so that
``opcli.multipart.SavedBody`` can send the bytes again with a token put back there and nothing else
changed (same boundary, same content type).

The parser says what to hold back (a part from its first header until its name is known, a text
part until it ends) and what to cut; everything else is written as it comes, so memory stays
bounded by the largest text field, whatever the size of a file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

#: A body without ``--save-dir`` (kept only for forwarding) stays in memory up to this size.
SPOOL = 1024 * 1024


def saved_path(save_dir: Path, suffix: str) -> Path:
    """A new file name in ``save_dir``: time and a random part, never a name the client chose."""
    return save_dir / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:12]}{suffix}"


class RawBody:
    """One call's body as received, token values cut out, written as it streams in.

    Offsets given to ``hold`` and ``cut`` count the bytes of the stream as received; ``size``,
    ``token_at`` and ``sha256`` describe what was written. ``complete`` is set by ``finish``
    once the whole body was read and parsed; an incomplete body is never kept.
    """

    def __init__(self, save_dir: Path | None) -> None:
        self.path = saved_path(save_dir, ".body") if save_dir is not None else None
        self.handle: IO[bytes] | None = (
            open(self.path, "xb")  # noqa: SIM115 - closed by finish() or close()
            if self.path is not None
            else tempfile.SpooledTemporaryFile(SPOOL)  # noqa: SIM115 - closed by close()
        )
        self.digest = hashlib.sha256()
        self.size = 0
        self.token_at: list[int] = []
        self.complete = False
        self.received = 0
        self._pending = bytearray()  # received but not written yet: the stream from offset _written_to
        self._written_to = 0
        self._hold: int | None = None
        self._cuts: list[tuple[int, int, bytes | None]] = []

    def hold(self, at: int) -> None:
        """Write nothing from stream offset ``at`` on until ``release`` (a part whose name is not known yet)."""
        if self._hold is None:
            self._hold = at

    def release(self) -> None:
        self._hold = None

    def cut(self, start: int, end: int, instead: bytes | None = None) -> None:
        """Leave out the stream's bytes ``start:end``; they must be held until now.

        Without ``instead`` that is a token's value, put back there when the body is sent again
        (``token_at``); with it, a secret quoted elsewhere, masked for good by ``instead``.
        """
        self._cuts.append((start, end, instead))

    def write(self, chunk: bytes) -> None:
        """The next bytes of the stream: write what is neither held nor cut."""
        self._pending += chunk
        self.received += len(chunk)
        self._flush(self.received if self._hold is None else self._hold)

    def _flush(self, upto: int) -> None:
        base = self._written_to
        if upto <= base:
            return
        position = base
        later = []
        for start, end, instead in sorted(self._cuts, key=lambda cut: cut[:2]):
            if end > upto:
                later.append((start, end, instead))
                continue
            self._emit(self._pending[position - base : start - base])
            if instead is None:
                self.token_at.append(self.size)
            else:
                self._emit(instead)
            position = end
        self._cuts = later
        self._emit(self._pending[position - base : upto - base])
        del self._pending[: upto - base]
        self._written_to = upto

    def _emit(self, data: bytes | bytearray) -> None:
        if data:
            assert self.handle is not None
            self.handle.write(data)
            self.digest.update(data)
            self.size += len(data)

    def finish(self) -> None:
        """The body was read and parsed to its end: write the rest, and close a saved file."""
        self._hold = None
        self._flush(self.received)
        self.complete = True
        if self.path is not None and self.handle is not None:
            self.handle.close()
            self.handle = None

    @property
    def source(self) -> Path | IO[bytes]:
        """Where the bytes can be read back: the saved file, or the temporary one."""
        return self.path if self.path is not None else self.handle  # type: ignore[return-value]

    def entry(self, content_type: str) -> dict[str, Any]:
        """The journal's ``body``: where it was saved, its size and sha256, its content type, the token's places."""
        return {
            "saved_as": str(self.path),
            "size": self.size,
            "sha256": self.digest.hexdigest(),
            "content_type": content_type,
            "token_at": self.token_at,
        }

    def close(self) -> None:
        """Done with it: close it, and remove the file unless it was saved complete."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.path is not None and not self.complete:
            self.path.unlink(missing_ok=True)
            self.path = None
