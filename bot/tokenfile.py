"""The file that keeps an OAuth2 refresh token: readable by its owner alone, replaced atomically.

A refresh token opens the mailbox for months; a copy others can read is refused, not used. The
file is written to a temporary name created with mode 0600 beside it, synced, then renamed over
the old one: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from bot.errors import TokenError
from bot.i18n import t

MAX_BYTES = 1_000_000  # an MSAL cache for a few accounts is a few kB


def read(path: Path) -> dict[str, Any]:
    """The JSON object in `path`. TokenError when missing, readable by others, not ours, or not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise TokenError(f"{path}: " + t("no token file: run `relance login` once (see the README)")) from None
    except OSError as e:
        raise TokenError(f"{path}: " + t("cannot open the token file: {why}", why=e.strerror or e)) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"{path}: " + t("not a regular file"))
        if info.st_uid != os.geteuid():
            raise TokenError(f"{path}: " + t("belongs to another user (uid {uid}): refused; run `relance login` "
                                             "as the user that runs relance", uid=info.st_uid))
        if info.st_mode & 0o077:
            raise TokenError(f"{path}: " + t("others can read or write it (mode {mode}): refused; run "
                                             "`chmod 600 {path}` and consider the token leaked (sign in again)",
                                             mode=oct(stat.S_IMODE(info.st_mode)), path=path))
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise TokenError(f"{path}: " + t("larger than {n} bytes: not a token file", n=MAX_BYTES))
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TokenError(f"{path}: " + t("not a token file written by `relance login` (not JSON)")) from None
    if not isinstance(doc, dict):
        raise TokenError(f"{path}: " + t("not a token file written by `relance login` (not JSON)"))
    return doc


def write(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` with `doc`, atomically, mode 0600."""
    data = json.dumps(doc, indent=1).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # left by a process that died mid-write: ours (same pid), so stale
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise TokenError(f"{path}: " + t("cannot write the token file: {why}", why=e.strerror or e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise TokenError(f"{path}: " + t("cannot write the token file: {why}", why=e.strerror or e)) from None
    with contextlib.suppress(OSError):  # the rename itself survives a crash
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
