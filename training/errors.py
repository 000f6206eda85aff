"""What ``python train.py`` does with a mistake the user can fix: one line on stderr, ``train.py: error: ...``,
naming the option or file and what is wrong, and exit status 2. ``--debug`` shows the traceback instead.
Any other exception is a bug and keeps its traceback.

A user's mistake is a :class:`UsageError` (raised where train.py checks an option or opens what the user
named: ``training/config.py``, ``training/checkpoint.py``, ``train.py``'s entry point and loader opening), a
:class:`~pipeline.io.shard_reader.BadSampleError` (names the shard and the sample) or a
:class:`~shardformat.ManifestError` (names the manifest).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pipeline.io.shard_reader import BadSampleError
from shardformat import ManifestError


class UsageError(ValueError):
    """A mistake in what the user gave (an option's value, a file, the data); the message names it and says
    what is wrong. A ``ValueError``, so callers of ``train.main`` that catch ``ValueError`` still do."""


#: The exceptions that are the user's to fix: reported as one line, without a traceback.
USER_ERRORS = (UsageError, BadSampleError, ManifestError)


def one_line(err: BaseException) -> str:
    """The message of a user's mistake on one line (with what to do about a bad sample)."""
    text = " ".join(str(err).split())
    if isinstance(err, BadSampleError):
        text += " (--skip-bad-samples skips and counts bad samples instead of stopping)"
    return text


def run_command(run: Callable[[], object], *, prog: str, debug: bool = False) -> int:
    """Call ``run()``; the exit status: 0, or 2 after one line on stderr for a user's mistake (``debug``:
    re-raised, so the traceback shows). Other exceptions propagate with their traceback."""
    try:
        run()
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr, flush=True)
        return 2
    return 0
