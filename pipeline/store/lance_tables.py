"""Opening Lance tables: "there is no table yet" is an answer; every other failure is an error.

A missing table is normal (a first run); a table that exists but cannot be read, a path
that is a file, or an object store that refuses the credentials must not pass for "no
table", or a job would silently start over or write beside it.
"""

from __future__ import annotations

import re

import lance
import pyarrow.fs as pafs


class TableError(OSError):
    """A Lance table that exists (or may exist) but cannot be opened."""


def open_table(uri: str) -> lance.LanceDataset | None:
    """The dataset at ``uri``, or None when no table is there; raises TableError otherwise."""
    try:
        return lance.dataset(uri)
    except (ValueError, FileNotFoundError, OSError) as err:
        if "was not found" in str(err) or isinstance(err, FileNotFoundError):
            return None
        raise TableError(f"cannot open the Lance table at {uri}: {_reason(err)}") from err


def _reason(err: Exception) -> str:
    """One line: an object store's error code (NoSuchBucket, AccessDenied, ...) rather than its XML body."""
    text = str(err)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    if code:
        return (f"the object store answered {code.group(1)}; check the bucket, the credentials and the endpoint "
                "(AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or GCS / Azure equivalents)")
    return text.splitlines()[0][:300] if text else type(err).__name__


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a local path or an object-store URI, and the path on it."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    local = pafs.LocalFileSystem()
    return local, local.normalize_path(uri)


def list_tables(directory: str) -> list[str]:
    """URIs of the Lance tables (``*.lance``) directly under ``directory`` (a path or a URI), sorted."""
    fs, path = filesystem(directory)
    prefix = directory.split("://", 1)[0] + "://" if "://" in directory else ""
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(prefix + i.path for i in infos if i.type == pafs.FileType.Directory and i.path.endswith(".lance"))


def in_list(column: str, values) -> str:
    """A Lance filter ``column IN ('a', 'b', ...)`` over string ``values``, quotes escaped."""
    quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"{column} IN ({quoted})"
