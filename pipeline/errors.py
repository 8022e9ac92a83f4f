"""One line for an OSError that reaches an entry point: the file, what went wrong, what to do."""

from __future__ import annotations

import errno

_FULL = "the disk is full: free space there, or point `store` at a disk with room, then rerun"
_ADVICE = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EROFS: "point `store` at a writable folder or remount it read-write, then rerun",
    errno.EACCES: "this user may not use it: fix its permissions, or point `store` at a "
    "folder this user may write, then rerun",
    errno.EPERM: "this user may not use it: fix its permissions, then rerun",
    errno.ENOENT: "no such file or folder: check the path in the config or command line",
    errno.ENOTDIR: "a file stands where a folder is expected: move it away, then rerun",
    errno.EISDIR: "a folder stands where a file is expected: move it away, then rerun",
    errno.EEXIST: "something is already there: move it away, then rerun",
}


def explain(error: OSError) -> str:
    """`error` as one line; errors of our own (no errno) already name the file and the fix."""
    if error.errno is None or error.strerror is None:
        return str(error)
    where = error.filename if error.filename is not None else "(no file named)"
    advice = _ADVICE.get(error.errno, "check the path, its permissions and the disk, then rerun")
    return f"{where}: {error.strerror.lower()}; {advice}"
