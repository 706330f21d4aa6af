"""Opening Lance tables: "there is no table yet" is an answer; every other failure is an error.

A missing table is normal (a first run); a table that exists but cannot be read, a path
that is a file, or an object store that refuses the credentials must not pass for "no
table", or a job would silently start over or write beside it.
"""

from __future__ import annotations

import lance


class TableError(OSError):
    """A Lance table that exists (or may exist) but cannot be opened."""


def open_table(uri: str) -> lance.LanceDataset | None:
    """The dataset at ``uri``, or None when no table is there; raises TableError otherwise."""
    try:
        return lance.dataset(uri)
    except (ValueError, FileNotFoundError, OSError) as err:
        if "was not found" in str(err) or isinstance(err, FileNotFoundError):
            return None
        raise TableError(f"cannot open the Lance table at {uri}: {str(err).splitlines()[0][:300]}") from err
