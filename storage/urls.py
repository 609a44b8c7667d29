"""Where simshard may write and read its own folders: local paths (or ``file://`` URLs) for now.

Sources are read through fsspec (any URL its backends support). The folders simshard makes (shard sets,
indexes, run folders) are local until object-store output lands (issue #14): a URL such as ``s3://b/x`` is
refused in one line instead of being taken for a local folder named ``s3:``.
"""

from urllib.parse import urlparse


def local_folder(value: str, *, flag: str) -> str:
    """``value`` as a local path (a ``file://`` URL's path); ValueError naming ``flag`` for any other URL."""
    if "://" not in value:
        return value
    scheme = urlparse(value).scheme
    if scheme == "file":
        return urlparse(value).path
    raise ValueError(f"{flag} {value}: simshard writes and trains from local folders only (object-store "
                     f"{scheme}:// folders are not supported yet); pass a local path")
