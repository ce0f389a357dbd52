"""Root-safe files: every file and directory chaosext writes (or reads back and acts on) goes through here.

chaosext runs as root next to directories other users may own. Opening ``<dir>/.lock`` with ``O_TRUNC`` by path, or
``chmod``-ing a path that was just swapped for a symlink, lets any user who can write one directory of that path make
root truncate, chmod or overwrite any file. So:

- A directory is opened component by component from ``/`` with ``O_DIRECTORY|O_NOFOLLOW`` (:func:`open_dir`). Every
  directory on the way must be owned by root or by the effective user and must not be writable by group or others
  (a sticky directory such as ``/tmp`` is allowed on the way: others cannot rename what is in it); a symlink on the way
  is followed only when it sits in such a directory and belongs to root or the effective user. The directory itself
  must be owned by the effective user and not be writable by group or others. Missing directories are created 0700.
  A path that passes cannot be changed under chaosext by anyone but root (or the user chaosext runs as), which is
  also what makes it safe to hand such a path to a child process (the lab's Prometheus, k6).
- Files are then created, read, replaced and removed relative to that directory's descriptor (``dir_fd``), never by
  path, always with ``O_NOFOLLOW``: a new file's content goes to a temp file with a random name created
  ``O_CREAT|O_EXCL``, mode 0600, and is renamed over the old one (``os.replace`` with ``src_dir_fd``/``dst_dir_fd``).
  A file read back must be a regular file owned by the effective user and not writable by group or others; anything
  else raises :class:`UnsafePath` (a record another user planted is never acted on).

Default places (:func:`default_dir`): a user keeps the documented per-user defaults (``./.chaosext-lab``,
``./.chaosext-run``, ``~/.chaosext/faults``); root gets ``/var/lib/chaosext/<lab|run|faults>`` (created 0700), so
root's state never lands in a checkout or home directory another user can write.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections import deque
from pathlib import Path

from chaosext.core.errors import ChaosextError

__all__ = ["ROOT_STATE_DIR", "UnsafePath", "SafeDir", "default_dir", "open_dir", "ensure_dir", "read_bytes",
           "read_text", "write_file", "write_output", "open_append", "remove", "mtime", "check_file"]

#: where root's state lives when no directory is given
ROOT_STATE_DIR = "/var/lib/chaosext"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40


class UnsafePath(ChaosextError, PermissionError):
    """A path chaosext would write or trust can be changed by another user (or is a symlink / not ours); the message
    names it and says what to do."""


def default_dir(user_default: str | os.PathLike[str], name: str) -> str:
    """``user_default`` for a normal user; ``/var/lib/chaosext/<name>`` for root (a root-private place)."""
    if os.geteuid() == 0:
        return f"{ROOT_STATE_DIR}/{name}"
    return os.fspath(user_default)


def _fix(shown: str) -> str:
    return (f"use a directory only root or you can change (e.g. leave the setting unset: root's default is "
            f"{ROOT_STATE_DIR}/...), or fix the owner/mode of {shown}")


def _check_on_the_way(st: os.stat_result, shown: str) -> None:
    """A directory a path passes through: owned by root or us, not writable by others unless sticky."""
    euid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{shown} is not a directory")
    if st.st_uid not in (0, euid):
        raise UnsafePath(f"{shown} belongs to uid {st.st_uid}, who could swap what chaosext writes below it; "
                         f"{_fix(shown)}")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafePath(f"{shown} is writable by group or others (mode {st.st_mode & 0o7777:o}); {_fix(shown)}")


def _check_own_dir(st: os.stat_result, shown: str) -> None:
    """The directory chaosext works in: ours, and nobody else may write it."""
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{shown} is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafePath(f"{shown} belongs to uid {st.st_uid}, not to the user chaosext runs as "
                         f"({os.geteuid()}); {_fix(shown)}")
    if st.st_mode & 0o022:
        raise UnsafePath(f"{shown} is writable by group or others (mode {st.st_mode & 0o7777:o}); "
                         f"chmod go-w {shown} or {_fix(shown)}")


def check_file(st: os.stat_result, shown: str) -> None:
    """A file chaosext reads back or appends to: a regular file of ours that nobody else may write."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{shown} is not a regular file; chaosext does not trust it (remove it)")
    if st.st_uid != os.geteuid():
        raise UnsafePath(f"{shown} belongs to uid {st.st_uid}, not to the user chaosext runs as ({os.geteuid()}); "
                         f"chaosext does not act on it (remove it)")
    if st.st_mode & 0o022:
        raise UnsafePath(f"{shown} is writable by group or others (mode {st.st_mode & 0o7777:o}); chaosext does not "
                         f"act on it (remove it)")


def _name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UnsafePath(f"{name!r} is not a plain file name")
    return name


class SafeDir:
    """A directory opened by :func:`open_dir`; every operation is relative to its descriptor. Close it (or use it as
    a context manager)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    # ---------------------------------------------------------------- life
    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def shown(self, name: str = "") -> str:
        return f"{self.path.rstrip('/')}/{name}" if name else self.path

    # ---------------------------------------------------------------- directories
    def subdir(self, name: str, create: bool = True, mode: int = 0o700) -> SafeDir:
        """The sub-directory ``name`` (created ``mode`` when missing), checked like :func:`open_dir`'s result; a
        symlink or anything else that is not a directory there is refused (:class:`UnsafePath`)."""
        try:
            fd = _open_child_dir(self.fd, _name(name), create, mode)
        except NotADirectoryError:
            kind = "a symlink" if stat.S_ISLNK(self.lstat(name).st_mode) else "not a directory"
            raise UnsafePath(f"{self.shown(name)} is {kind}; chaosext does not follow it; "
                             f"{_fix(self.shown(name))}") from None
        try:
            _check_own_dir(os.fstat(fd), self.shown(name))
        except BaseException:
            os.close(fd)
            raise
        return SafeDir(fd, self.shown(name))

    def listdir(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def rmtree(self, name: str, missing_ok: bool = True) -> None:
        """Remove the sub-directory ``name`` and everything in it (without following any symlink)."""
        try:
            st = os.stat(_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            if missing_ok:
                return
            raise
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=self.fd)
            return
        shutil.rmtree(name, dir_fd=self.fd)

    # ---------------------------------------------------------------- files
    def lstat(self, name: str) -> os.stat_result:
        return os.stat(_name(name), dir_fd=self.fd, follow_symlinks=False)

    def exists(self, name: str) -> bool:
        try:
            self.lstat(name)
            return True
        except FileNotFoundError:
            return False

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        """``os.open`` of ``name`` in this directory with ``O_NOFOLLOW``; the file must be a regular file of ours that
        nobody else can write (:func:`check_file`). A file this call creates gets exactly ``mode``."""
        try:
            fd, created = self._open(name, flags, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{self.shown(name)} is a symlink; chaosext does not follow it (remove it)") from None
            raise
        try:
            if created:
                os.fchmod(fd, mode)  # open's mode is filtered by the umask
            check_file(os.fstat(fd), self.shown(name))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, name: str, flags: int, mode: int) -> tuple[int, bool]:
        created = False
        flags |= os.O_NONBLOCK  # a FIFO planted here must not block chaosext (regular files ignore the flag)
        if flags & os.O_CREAT and not flags & os.O_EXCL:
            try:  # create it ourselves (O_EXCL) so that we know whether to set its mode
                fd = os.open(_name(name), flags | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
                created = True
            except FileExistsError:
                fd = os.open(name, (flags & ~os.O_CREAT) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        else:
            fd = os.open(_name(name), flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
            created = bool(flags & os.O_CREAT)
        return fd, created

    def read_bytes(self, name: str) -> bytes:
        fd = self.open(name, os.O_RDONLY)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def write(self, name: str, data: str | bytes, mode: int = 0o600) -> None:
        """Replace ``name`` atomically: a temp file with a random name (``O_EXCL``, ``mode``), then a rename."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        tmp = f".{_name(name)}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            raise

    def append_fd(self, name: str, mode: int = 0o600) -> int:
        """A descriptor appending to ``name`` (created ``mode`` when missing)."""
        return self.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst``, both in this directory."""
        os.replace(_name(src), _name(dst), src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str, missing_ok: bool = True) -> bool:
        """Remove ``name`` (a file or a symlink, never what a symlink points at); True when it was there."""
        try:
            os.unlink(_name(name), dir_fd=self.fd)
            return True
        except FileNotFoundError:
            if missing_ok:
                return False
            raise


def _open_child_dir(parent: int, name: str, create: bool, mode: int) -> int:
    """openat(parent, name, O_DIRECTORY|O_NOFOLLOW), creating it ``mode`` when missing and ``create``."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:  # made by someone else meanwhile: it is checked like any other
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    os.fchmod(fd, mode)  # mkdir's mode is filtered by the umask
    return fd


def open_dir(path: str | os.PathLike[str], create: bool = False, mode: int = 0o700,
             anyones: bool = False) -> SafeDir:
    """Open directory ``path`` the safe way (module docstring), creating missing directories ``mode`` when
    ``create``. Raises :class:`UnsafePath`, FileNotFoundError (missing, not ``create``) or another OSError.
    ``anyones``: only for an output the operator names (:func:`write_output`): the directories may belong to anyone,
    symlinks are still followed only when root's or ours."""
    shown = os.path.abspath(os.fspath(path))
    todo = deque(shown.split("/"))
    euid = os.geteuid()
    stack = [os.open("/", _DIR_FLAGS)]
    where = [""]
    links = 0
    try:
        _check_on_the_way(os.fstat(stack[0]), "/")
        while todo:
            name = todo.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    where.pop()
                continue
            here = "/".join(where) + "/" + name
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=stack[-1])
            except FileNotFoundError:
                if not create:
                    raise
                fd = _open_child_dir(stack[-1], name, True, mode)
            except NotADirectoryError:
                st = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise UnsafePath(f"{here} is not a directory") from None
                if st.st_uid not in (0, euid):
                    raise UnsafePath(f"{here} is a symlink of uid {st.st_uid}; chaosext does not follow it; "
                                     f"{_fix(here)}") from None
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePath(f"{shown}: too many symlinks") from None
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    for fd_ in stack[1:]:
                        os.close(fd_)
                    del stack[1:], where[1:]
                todo.extendleft(reversed(target.split("/")))
                continue
            stack.append(fd)
            where.append(name)
            if not anyones:
                _check_on_the_way(os.fstat(fd), here)
        if not anyones:
            _check_own_dir(os.fstat(stack[-1]), shown)
        final = stack.pop()
        return SafeDir(final, shown)
    finally:
        for fd_ in stack:
            os.close(fd_)


def ensure_dir(path: str | os.PathLike[str], mode: int = 0o700) -> Path:
    """Create ``path`` (and missing parents, ``mode``) the safe way, or check an existing one; its absolute path."""
    with open_dir(path, create=True, mode=mode) as d:
        return Path(d.path)


def _split(path: str | os.PathLike[str]) -> tuple[str, str]:
    full = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(full)
    return parent, _name(name)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The content of ``path``, a file of ours in a safe directory (FileNotFoundError when missing)."""
    parent, name = _split(path)
    with open_dir(parent) as d:
        return d.read_bytes(name)


def read_text(path: str | os.PathLike[str]) -> str:
    return read_bytes(path).decode("utf-8")


def write_file(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o600) -> Path:
    """Replace ``path`` atomically (its directory is created 0700 when missing); its absolute path."""
    parent, name = _split(path)
    with open_dir(parent, create=True) as d:
        d.write(name, data, mode)
        return Path(d.shown(name))


def write_output(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644) -> Path:
    """Write an output the operator names (a report, saved ranges), where they ask, as root too: in a directory that
    may be another user's (a CI runner's workspace), so never read back or trusted. Still never through a symlink of
    another user, and by a temp file with a random name renamed over ``path``: a symlink or hard link planted at
    ``path`` is replaced, never written through. Missing directories are created 0755."""
    parent, name = _split(path)
    with open_dir(parent, create=True, mode=0o755, anyones=True) as d:
        d.write(name, data, mode)
        return Path(d.shown(name))


def open_append(path: str | os.PathLike[str], mode: int = 0o600) -> int:
    """A descriptor appending to ``path`` (created ``mode``; its directory created 0700 when missing)."""
    parent, name = _split(path)
    with open_dir(parent, create=True) as d:
        return d.append_fd(name, mode)


def remove(path: str | os.PathLike[str]) -> bool:
    """Remove the file ``path`` (never what a symlink there points at); True when it was there."""
    parent, name = _split(path)
    try:
        with open_dir(parent) as d:
            return d.unlink(name)
    except FileNotFoundError:
        return False


def mtime(path: str | os.PathLike[str]) -> float | None:
    """The modification time of ``path``, a file of ours in a safe directory; None when it is missing or not
    trustworthy (a symlink, another user's, writable by others)."""
    parent, name = _split(path)
    try:
        with open_dir(parent) as d:
            st = d.lstat(name)
            check_file(st, d.shown(name))
            return st.st_mtime
    except (OSError, UnsafePath):
        return None
