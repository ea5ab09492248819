"""Exceptions raised at jnnp's boundaries (files, configs, neighbour buffers).

Every error a user can trigger with bad input is one of these, with a message that names the
file, the line or frame, what was expected and what was found.
"""

from __future__ import annotations

__all__ = ["JnnpError", "DataFormatError", "ModelFormatError", "ConfigError", "NeighborOverflowError"]


class JnnpError(Exception):
    """Base class of all jnnp errors."""


class DataFormatError(JnnpError, ValueError):
    """Malformed structure data.

    Args:
        path: file (or directory) being read.
        expected: what the reader expected, e.g. ``"6 fields 'atom x y z element charge ...'"``.
        got: what it found (a short excerpt of the offending text or value).
        line: 1-based line number, when the format is line-based.
        frame: 0-based frame (structure) index within the file, when known.
    """

    def __init__(self, path, expected: str, got: str | None = None, *, line: int | None = None,
                 frame: int | None = None):
        self.path, self.expected, self.got, self.line, self.frame = str(path), expected, got, line, frame
        where = self.path
        if line is not None:
            where += f", line {line}"
        if frame is not None:
            where += f", frame {frame}"
        msg = f"{where}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg)


class ModelFormatError(DataFormatError):
    """Malformed model files (n2p2 ``input.nn``, ``scaling.data``, ``weights.NNN.data``, checkpoints)."""


class ConfigError(JnnpError, ValueError):
    """Invalid configuration; the message starts with the dotted key path."""


class NeighborOverflowError(JnnpError, RuntimeError):
    """A fixed-capacity neighbour buffer overflowed and could not be reallocated."""
