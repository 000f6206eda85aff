"""Shards at URLs (``https://``, ``http://``, ``s3://``, ``gs://``, anything fsspec knows): byte-range reads.

The loader never downloads a whole tar: the DALI index file beside each tar is fetched once per shard, and
every sample member is then one ranged read (``fs.cat_file(path, start, end)``, an HTTP ``Range`` request,
an S3/GCS ranged GET). Every read has a timeout; transient failures (timeouts, 5xx, 408/429, dropped or
reset connections, short bodies) are retried with exponential backoff up to ``RemoteOptions.retries``
times, then raise :class:`RemoteReadError` naming the URL, the byte range, the attempts and the last
error. ``SampleRecord.read`` turns that into the sample's ``BadSampleError``, which the loader raises or
skips like any bad sample. Permanent failures (404, 403, a server that ignores ``Range``) are not retried.

With ``RemoteOptions.cache_dir`` every member read is kept on local disk (one file per byte range, written
atomically, so worker processes may fill the cache at once); later epochs read those files and make no
request. Only the ranges the loader asked for are cached, never a whole tar.

``s3://`` needs ``s3fs`` and ``gs://`` needs ``gcsfs`` (the ``s3`` / ``gcs`` extras); ``http(s)://`` needs
``aiohttp`` (a runtime dependency). Credentials come from ``storage_options`` (passed to fsspec as they are)
or from the usual environment (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from shardformat import atomic_write

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
#: HTTP statuses worth retrying besides 5xx: request timeout, too many requests.
_RETRY_STATUSES = (408, 429)
#: Concurrent reads when many small members are fetched at start-up (each sample's KEY.json).
SCAN_THREADS = 16


def is_url(path) -> bool:
    """True for ``scheme://...`` strings (read through fsspec), False for local paths."""
    return isinstance(path, str) and bool(_SCHEME.match(path))


@dataclass(frozen=True)
class RemoteOptions:
    """How shards at URLs are read. Picklable: it travels with every sample record into worker processes,
    each of which opens its own fsspec filesystem from it."""

    storage_options: dict = field(default_factory=dict, hash=False)
    """Keyword arguments for the fsspec filesystem (e.g. ``{"anon": true}`` for s3fs, ``{"headers": {...}}``
    for HTTP). Empty: defaults plus environment credentials."""

    retries: int = 4
    """Extra attempts after a transient failure of one read (0 = no retry)."""

    timeout_s: float = 30.0
    """Limit on one read (request and body), in seconds."""

    backoff_s: float = 0.5
    """Wait before the first retry, in seconds; doubled each retry (with +-50 % jitter), capped at ``max_backoff_s``."""

    max_backoff_s: float = 8.0
    """Longest wait between two attempts, in seconds."""

    cache_dir: str | None = None
    """Local folder keeping every member read (later epochs read it instead of the network); None: no cache."""

    def __post_init__(self) -> None:
        if not isinstance(self.storage_options, dict):
            raise ValueError(f"storage_options must be a JSON object (dict), got {type(self.storage_options).__name__}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(f"need 0 <= backoff_s <= max_backoff_s, got {self.backoff_s}, {self.max_backoff_s}")

    @classmethod
    def from_cli(cls, storage_options: str = "", cache_dir: str = "", **kwargs) -> "RemoteOptions":
        """From command-line strings: ``storage_options`` as JSON text (empty = none), ``cache_dir`` empty = none."""
        options = {}
        if storage_options:
            try:
                options = json.loads(storage_options)
            except ValueError as e:
                raise ValueError(f"--storage-options is not valid JSON: {e}") from None
        return cls(storage_options=options, cache_dir=cache_dir or None, **kwargs)


class RemoteReadError(OSError):
    """A read of a URL that failed for good (permanent error, or transient ones past the retry bound)."""


_filesystems: dict = {}
_filesystems_lock = threading.Lock()


def _filesystem(url: str, options: RemoteOptions):
    """(fsspec filesystem, path within it) for ``url``; one filesystem per process and options (a forked or
    spawned worker opens its own: an inherited one would share the parent's event loop and sockets)."""
    import fsspec

    protocol = url.split("://", 1)[0]
    key = (os.getpid(), protocol, json.dumps(options.storage_options, sort_keys=True, default=str))
    with _filesystems_lock:
        fs = _filesystems.get(key)
        if fs is None:
            try:
                fs = fsspec.filesystem(protocol, **options.storage_options)
            except ImportError as e:
                extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(protocol)
                hint = f" (pip install 'speedssl[{extra}]')" if extra else ""
                raise RemoteReadError(f"cannot read {url}: {e}{hint}") from None
            _filesystems[key] = fs
    return fs, fs._strip_protocol(url)


def _transient(error: BaseException) -> bool:
    """Whether another attempt may succeed: timeouts, dropped or reset connections, short bodies, HTTP 5xx,
    408 and 429 (and the OSErrors s3fs/gcsfs raise for those); not a missing object, a refused permission,
    a server that ignores Range, or anything else (a bug should surface, not become a retried bad sample)."""
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, _WrongLength)):
        return False
    status = getattr(error, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status >= 500 or status in _RETRY_STATUSES
    from fsspec.exceptions import FSTimeoutError

    transient: tuple = (TimeoutError, FSTimeoutError, EOFError, OSError)  # ConnectionError is an OSError
    try:
        import aiohttp

        transient += (aiohttp.ClientError,)  # payload, disconnection and connection errors
    except ImportError:
        pass
    return isinstance(error, transient)


class _WrongLength(ValueError):
    pass


def _cache_path(options: RemoteOptions, url: str, start: int | None, size: int | None) -> str | None:
    if options.cache_dir is None or start is None:  # whole objects (index, manifest) are small and read once
        return None
    digest = hashlib.sha256(url.encode()).hexdigest()[:24]
    return os.path.join(options.cache_dir, digest, f"{start}-{size}")


def read(url: str, options: RemoteOptions, start: int | None = None, size: int | None = None) -> bytes:
    """Bytes ``[start, start + size)`` of ``url`` (the whole object when ``start`` is None) in one request per
    attempt, retried as the module docstring says. Raises :class:`RemoteReadError`."""
    what = f"{url} bytes {start}-{start + size - 1}" if start is not None else url
    if start is not None and (start < 0 or size < 0):
        raise RemoteReadError(f"{what}: negative offset or size")
    if start is not None and size == 0:
        return b""
    cached = _cache_path(options, url, start, size)
    if cached is not None and os.path.isfile(cached):
        with open(cached, "rb") as f:
            data = f.read()
        if size is None or len(data) == size:
            return data
    fs, path = _filesystem(url, options)
    kwargs = {"timeout": options.timeout_s} if getattr(fs, "async_impl", False) else {}
    attempts = options.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            if start is None:
                data = fs.cat_file(path, **kwargs)
            else:
                data = fs.cat_file(path, start=start, end=start + size, **kwargs)
                if len(data) > size:
                    raise _WrongLength(f"got {len(data)} bytes for a {size}-byte range: the server ignores Range requests")
                if len(data) < size:
                    raise EOFError(f"short read: {len(data)} of {size} bytes")
            break
        except Exception as e:  # noqa: BLE001 -- fsspec backends raise their own types; classified below
            reason = f"{type(e).__name__}: {e}".strip().rstrip(":") or type(e).__name__
            if isinstance(e, FileNotFoundError):
                reason = "not found (404)"
            if not _transient(e):
                raise RemoteReadError(f"{what}: {reason}") from None
            if attempt == attempts:
                raise RemoteReadError(f"{what}: failed {attempts} time(s), last: {reason}") from None
            delay = min(options.max_backoff_s, options.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            log.info("retrying %s in %.2f s (attempt %d of %d): %s", what, delay, attempt + 1, attempts, reason)
            time.sleep(delay)
    if cached is not None:  # atomic, so worker processes and reader threads may fill the cache at once
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        atomic_write(Path(cached), data)
    return data


def read_many(url: str, options: RemoteOptions, ranges: list[tuple[int, int]]) -> list:
    """``read(url, options, start, size)`` for every ``(start, size)``, concurrently (start-up reads of many
    small members); each entry is the bytes or the :class:`RemoteReadError` of that range."""

    def one(r):
        try:
            return read(url, options, *r)
        except RemoteReadError as e:
            return e

    if len(ranges) <= 1:
        return [one(r) for r in ranges]
    with concurrent.futures.ThreadPoolExecutor(min(SCAN_THREADS, len(ranges))) as pool:
        return list(pool.map(one, ranges))


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a URL (``os.path.join`` would not do for ``scheme://``)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def sibling(url: str, suffix: str) -> str:
    """``.../train-000000.tar`` -> ``.../train-000000{suffix}`` (the index file beside a tar)."""
    head, sep, name = url.rpartition("/")
    stem = name[: name.rfind(".")] if "." in name else name
    return f"{head}{sep}{stem}{suffix}"


def add_remote_arguments(parser) -> None:
    """The command-line options of :class:`RemoteOptions` (``python -m pipeline`` and the benchmarks)."""
    group = parser.add_argument_group("remote shards", "Reading shards given as URLs (https://, s3://, gs://, ...).")
    group.add_argument("--storage-options", default="", metavar="JSON",
                       help="fsspec storage options as a JSON object, e.g. '{\"anon\": true}' (default: environment credentials)")
    group.add_argument("--shard-cache", default="", metavar="DIR", help="keep every member read under DIR; later epochs read it locally (default: no cache)")
    group.add_argument("--read-retries", type=int, default=RemoteOptions.retries, help="retries of a failed read before the sample is bad")
    group.add_argument("--read-timeout", type=float, default=RemoteOptions.timeout_s, help="limit on one read, seconds")


def remote_options(args) -> RemoteOptions:
    """:class:`RemoteOptions` from the options :func:`add_remote_arguments` added (or any object with the same
    attributes: ``storage_options``, ``shard_cache``, ``read_retries``, ``read_timeout``, e.g. ``train.py``'s
    data config)."""
    return RemoteOptions.from_cli(args.storage_options, args.shard_cache, retries=args.read_retries, timeout_s=args.read_timeout)
