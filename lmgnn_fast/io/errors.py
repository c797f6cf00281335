"""Errors raised while reading or validating a graph in the directory format."""
from __future__ import annotations

from dataclasses import dataclass


class GraphFormatError(ValueError):
    """A graph's files or tables break the directory format.

    The message starts with the location — file, row and column where known — followed by
    what is wrong and the offending value, e.g.::

        edges/paper__cites__paper.csv, row 17 (line 19), column 'dst': id 'p999' is not in
        the node table of 'paper' (nodes/paper.csv)

    Rows are 0-based indices of the data rows (the header is not a row); for text formats
    the line number in the file is added (CSV: row + 2, JSONL: row + 1).

    Attributes:
        file: the file (or table name for in-memory tables), or None.
        row: 0-based data row, or None.
        column: the column name, or None.
    """

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None, line: int | None = None):
        self.file = file
        self.row = row
        self.column = column
        self.line = line
        self.reason = message
        loc = []
        if file is not None:
            loc.append(str(file))
        if row is not None:
            loc.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if column is not None:
            loc.append(f"column '{column}'")
        super().__init__(f"{', '.join(loc)}: {message}" if loc else message)


@dataclass(frozen=True)
class Source:
    """Where a table came from, to name it in error messages.

    Attributes:
        name: file path relative to the dataset directory (or a table label).
        line_base: line number of data row 0 in a text file (CSV 2, JSONL 1); None for
            binary formats and in-memory tables.
    """

    name: str
    line_base: int | None = None

    def error(self, message: str, row: int | None = None, column: str | None = None) -> GraphFormatError:
        line = None if (row is None or self.line_base is None) else int(row) + self.line_base
        return GraphFormatError(message, file=self.name, row=None if row is None else int(row),
                                column=column, line=line)


class OptionError(ValueError, TypeError):
    """An option of a graph loader is unknown or has a bad value.

    The message names the option, the value and what is accepted, e.g.
    ``read_dir: unknown option 'bogus' (options: add_reverse_edges, ...)``.
    A ``ValueError`` and, for callers that caught the ``TypeError`` of an unexpected keyword,
    a ``TypeError``.
    """


class PathError(ValueError):
    """A name that would become a file name is not a valid name, or a file resolves outside
    the folder it belongs to (``..``, absolute paths, symbolic links leading out)."""
