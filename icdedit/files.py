"""Atomic output files: written to a temporary file beside the target, then renamed."""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError

NAME_MAX = 255  # bytes in one file name (ext4, XFS, APFS, NTFS's 255 UTF-16 units hold more)


def check_name(path: Path) -> Path:
    """An output path the system can create: no NUL byte, a file name within NAME_MAX bytes.
    Checked before any model runs (the OS would refuse it only when the result is written)."""
    text = os.fspath(path)
    if "\0" in text:
        raise OutputError(f"output {text!r} holds a NUL byte", "remove it from the output name")
    size = len(os.fsencode(Path(text).name))
    if size > NAME_MAX:
        raise OutputError(
            f"output name {Path(text).name[:40]}... is {size} bytes, over the {NAME_MAX}-byte limit for a file name",
            "choose a shorter -o name",
        )
    return Path(path)


def check_output(path: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """Refuse a name the system cannot create, an existing output (unless overwrite), an input,
    or a folder that cannot be written."""
    path = check_name(path)
    for source in inputs:
        try:
            if source.exists() and path.exists() and path.samefile(source):
                raise OutputError(f"output {path} is an input file", "inputs are never overwritten; choose another -o")
        except OSError:
            pass
    if path.is_dir():
        raise OutputError(f"output {path} is a folder", "give a file name, e.g. -o result.png")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} already exists", "pass --overwrite to replace it, or choose another -o")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist", "create it first or choose another -o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable", "choose another -o")
    return path


def distinct_paths(paths: list[Path]) -> bool:
    """Whether the paths name different files (relative or absolute, `a/../b` or `b` alike)."""
    names = [os.path.normcase(os.path.abspath(p)) for p in paths]
    return len(set(names)) == len(names)


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies inside `folder` once `..` and symbolic links (of either) are resolved;
    a path no file can have (a NUL byte) lies nowhere."""
    try:
        real, root = os.path.realpath(path), os.path.realpath(folder)
    except ValueError:
        return False
    return os.path.commonpath([real, root]) == root and real != root


def make_folder(folder: Path, option: str) -> Path:
    """Create an output folder (and its parents); a file in the way or no permission is one line."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file of that name exists" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise OutputError(f"cannot create the {option} folder {folder}: {reason}", f"choose another {option}") from None
    return Path(folder)


TEMP_MARK = ".part"


def slug(text: str, limit: int = 40) -> str:
    """A prompt as a readable file-name part: 'a photo of a Dog!' -> 'a-photo-of-a-dog'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "edit"


_OWNER = re.compile(r"\.(\d+)-[A-Za-z0-9_]+" + re.escape(TEMP_MARK))
STALE_AFTER = 24 * 3600  # a temp file a day old is a dead run's, whoever named it


def _owner_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that a killed run left (never a finished output). A temp name
    carries its writer's pid (`write_atomically`): only those whose process is gone, or that are
    a day old, are removed, so a shard running beside this one keeps its file in flight."""
    stale = []
    for path in Path(folder).glob(f".*{TEMP_MARK}*"):
        try:
            if not path.is_file() or path.is_symlink():
                continue
            owner = _OWNER.search(path.name)
            if owner and _owner_alive(int(owner[1])) and time.time() - path.stat().st_mtime < STALE_AFTER:
                continue
            path.unlink(missing_ok=True)
            stale.append(path)
        except OSError:
            continue
    return stale


class FolderLock:
    """An advisory lock (flock) on one results file of an output folder, held for a run: a
    second run on the same folder and shard fails at once instead of doing every item again.
    The lock file names the holder (pid and host); the kernel drops a dead process's lock."""

    def __init__(self, path: Path, what: str):
        self.path, self.what, self.fd = Path(path), what, None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # no flock on this system: run unlocked
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot create the lock file {self.path}: {exc.strerror or exc}", "choose another --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputError(
                f"{self.what} is in use by another run ({holder}; lock {self.path.name})",
                "wait for it to finish, or choose another --out or --shard",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock; the file stays (removing it would race)
            self.fd = None


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(temp_path), then rename it onto `path`: readers never see half a file. A
    write that fails (read-only folder, full disk) leaves nothing behind and is an OutputError."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_MARK + path.suffix, dir=path.parent or ".")
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # what open() would have given: mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise
    return path


TEMP_RANDOM = 8  # the characters mkstemp adds


def _temp_prefix(path: Path) -> str:
    """`.NAME.PID-`, NAME cut (at a character boundary) so that the temporary name stays within
    NAME_MAX bytes: a 255-byte output is written as well as a short one."""
    owner = f".{os.getpid()}-"  # the writer: start-up cleanup spares the files of live processes
    room = NAME_MAX - len(os.fsencode(TEMP_MARK + path.suffix + owner)) - TEMP_RANDOM - 1
    name = os.fsencode(path.name)[:room].decode(errors="ignore") if len(os.fsencode(path.name)) > room else path.name
    return f".{name}{owner}"


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_error(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    hint = "free some space or choose another -o" if exc.errno == errno.ENOSPC else "choose a folder you can write to"
    return OutputError(f"cannot write {path}: {reason}", hint)
