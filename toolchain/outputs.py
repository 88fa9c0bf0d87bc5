"""Where vtool writes, and how: the one destination rule of every command that writes an artifact or output
directory, a lock per destination, atomic file and directory writes with the user's umask, and a sweep of what
killed runs left behind.

A stage builds its output in a uniquely named hidden staging entry beside the destination
(`.NAME.tmp-*`, `.NAME.build-*`) and renames it into place under the destination's lock, so two
runs never mix files and an interrupted one never leaves half an artifact. `tempfile` creates
staging as 0700/0600; finished outputs get the modes the user's umask gives any new file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from toolchain.errors import UserInputError

log = logging.getLogger(__name__)

STALE_AFTER_S = 30 * 60  # staging untouched this long, with no live run holding its destination, is debris
TEMP_STALE_AFTER_S = 24 * 3600  # vtool's scratch dirs in the system temp dir
_STAGING = re.compile(r"^\.(?P<dest>.+)\.(?:tmp|old|build)-[A-Za-z0-9_]+$")


# ------------------------------------------------------------------ permissions


def umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only read by setting)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def apply_umask(path: str | Path) -> None:
    """Give a file or directory made by `tempfile` (0600 / 0700) the mode a plain open() or mkdir() would."""
    target = Path(path)
    base = 0o777 if target.is_dir() else 0o666
    os.chmod(target, base & ~umask())


# ------------------------------------------------------------------ checks before any work


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def check_writable(path: str | Path, flag: str = "--out", *, directory: bool = True) -> None:
    """Fail before any long work when `path` (a directory, or a file with directory=False) cannot be written:
    a file where a directory is expected (or the reverse), a read-only file system, no permission, a full disk."""
    target = Path(path)
    if target.exists():
        if directory and not target.is_dir():
            raise UserInputError(f"{flag} '{target}' is a file; expected a directory. Choose another {flag}.")
        if not directory and target.is_dir():
            raise UserInputError(f"{flag} '{target}' is a directory; pass a file path such as {target}/result.json.")
    probe = _nearest_existing(target if directory else target.parent)
    if not probe.is_dir():
        raise UserInputError(f"{flag} '{target}' is not writable: '{probe}' is a file, not a directory. Choose "
                             f"another {flag}.")
    try:
        info = os.statvfs(probe)
    except OSError:
        info = None
    if info is not None and info.f_flag & os.ST_RDONLY:
        raise UserInputError(f"{flag} '{target}' is on a read-only file system ('{probe}'); choose a writable place.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"{flag} '{target}' is not writable (no permission on '{probe}'); choose another place.")
    if info is not None and info.f_bavail == 0:
        raise UserInputError(f"{flag} '{target}': no space left on the device holding '{probe}'; free some space "
                             "or choose another place.")


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_destination(dest: str | Path, *, sources: Iterable[str | Path | None] = (), overwrite: bool = False,
                      replaceable: Callable[[Path], bool] | None = None, kind: str = "an artifact directory",
                      flag: str = "--out") -> None:
    """The one destination rule of every command that writes a directory (export, quantize, train, data
    generate, pipeline), checked before any work:

    - never into a source being read (`quantize --model X --out X`), even with --overwrite;
    - an existing, non-empty destination is replaced only when it is `kind` (replaceable) and --overwrite
      was given; anything else (a file, a folder of other things) is never replaced;
    - the place must be writable.
    """
    target = Path(dest)
    if target.exists() and not target.is_dir():
        raise UserInputError(f"{flag} '{target}' is a file; expected a directory. Choose another {flag}.")
    resolved = target.resolve()
    for source in sources:
        text = str(source) if source is not None else ""
        if ".py:" in text:  # a user model file.py:Class
            text = text.rpartition(":")[0]
        if not text or not Path(text).exists():  # a registry or hub name, not a path
            continue
        src = Path(text).resolve()
        if _inside(src, resolved) or (src.is_dir() and _inside(resolved, src)):
            raise UserInputError(f"{flag} '{target}' is (or holds) the source '{source}' this command reads; "
                                 f"writing there would destroy it, --overwrite or not. Choose another {flag}.")
    if target.is_dir() and any(target.iterdir()):
        if replaceable is None or not replaceable(target):
            raise UserInputError(f"{flag} '{target}' exists and is not {kind}, so vtool will not replace it; "
                                 f"choose a new or empty {flag}.")
        if not overwrite:
            raise UserInputError(f"{flag} '{target}' already holds {kind}; pass --overwrite to replace it, or "
                                 f"choose another {flag}.")
    check_writable(target, flag)


# ------------------------------------------------------------------ one writer per destination


_held: dict[str, tuple[int, int, int]] = {}  # lock file -> (thread, depth, fd): re-entrant within one thread
_held_guard = threading.Lock()


def lock_file(dest: str | Path) -> Path:
    target = Path(dest).absolute()
    return target.parent / f".{target.name}.lock"


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(dest: Path, path: Path) -> UserInputError:
    owner = _lock_owner(path)
    who = f" (pid {owner})" if owner else ""
    return UserInputError(f"another vtool process{who} is writing '{dest}'; wait for it to finish or choose another "
                          f"--out (a crashed run's lock '{path}' is released when its process exits).")


def _acquire(dest: Path, path: Path) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _busy(dest, path) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file that its last holder unlinked while we were opening it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


@contextmanager
def destination_lock(dest: str | Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `dest` (flock: released by the kernel even when the process is killed); a second
    writer of the same destination, in this process or another, gets a one-line UserInputError at once."""
    target = Path(dest).absolute()
    path = lock_file(target)
    me = threading.get_ident()
    with _held_guard:
        held = _held.get(str(path))
        if held is not None and held[0] != me:
            raise _busy(target, path)
        if held is None:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserInputError(f"Cannot write to '{target.parent}' ({exc.strerror}); choose a writable "
                                     "--out.") from None
            fd = _acquire(target, path)
            held = (me, 0, fd)
        _held[str(path)] = (me, held[1] + 1, held[2])
    try:
        yield
    finally:
        with _held_guard:
            owner, depth, fd = _held[str(path)]
            if depth > 1:
                _held[str(path)] = (owner, depth - 1, fd)
            else:
                del _held[str(path)]
                path.unlink(missing_ok=True)  # unlink while still holding the lock, then release
                os.close(fd)


def _locked_by_live_run(dest: Path) -> bool:
    path = lock_file(dest)
    return path.exists() and (str(path) in _held or _alive(_lock_owner(path)))


def sweep_stale(parent: str | Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove staging entries (`.NAME.tmp-*`, `.NAME.old-*`, `.NAME.build-*`) that a killed run left in `parent`:
    only those untouched for `max_age_s` whose destination no live run holds. Returns what was removed."""
    folder = Path(parent)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _STAGING.match(entry.name)
        if match is None:
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if age < max_age_s or _locked_by_live_run(folder / match["dest"]):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            log.info("removed %s, left by an interrupted vtool run %.0f min ago", entry, age / 60)
            removed.append(entry)
    return removed


def sweep_temp(max_age_s: float = TEMP_STALE_AFTER_S) -> list[Path]:
    """vtool's own scratch directories in the system temp dir (`.vtool-*`, e.g. quantize's work dir) that a killed
    run left: only this user's, untouched for a day (no run keeps one that long without writing to it)."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(Path(tempfile.gettempdir()).glob(".vtool-*"))
    except OSError:
        return removed
    for entry in entries:
        try:
            info = entry.lstat()
        except OSError:
            continue
        if entry.is_dir() and not entry.is_symlink() and info.st_uid == os.getuid() and now - info.st_mtime > max_age_s:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# ------------------------------------------------------------------ atomic writes


def staging_dir(dest: str | Path, label: str = "tmp") -> Path:
    """A new, uniquely named hidden directory beside `dest` (after sweeping stale ones there)."""
    target = Path(dest)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target.parent)
        sweep_temp()
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.{label}-", dir=target.parent))
    except OSError as exc:
        raise UserInputError(f"Cannot write to '{target.parent}' ({exc.strerror}); choose a writable --out.") from None


def commit_dir(staging: Path, dest: Path, *, overwrite: bool) -> None:
    """Move a finished staging dir to `dest` under dest's lock; re-checks `dest`, which another run may have
    created meanwhile (replaced only with overwrite). The old `dest` is removed only once the new one is in place."""
    with destination_lock(dest):
        if dest.exists() and not dest.is_dir():
            raise UserInputError(f"--out '{dest}' is a file; expected a directory. Choose another --out.")
        if dest.is_dir() and any(dest.iterdir()) and not overwrite:
            raise UserInputError(f"--out '{dest}' was filled by another run while this one worked; pass --overwrite "
                                 "to replace it, or choose another --out. Nothing was written.")
        apply_umask(staging)
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old)  # onto the empty directory mkdtemp made: one rename
        try:
            os.replace(staging, dest)
        except BaseException:
            if old is not None and not dest.exists():
                os.replace(old, dest)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(destination: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging dir beside `destination`; when the block succeeds it becomes `destination` in one rename
    (see commit_dir). On any exception (KeyboardInterrupt included) the staging dir is removed and an existing
    `destination` is left exactly as it was."""
    dest = Path(destination)
    tmp = staging_dir(dest)
    try:
        yield tmp
        commit_dir(tmp, dest, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sweep_file_leftovers(target: Path) -> None:
    """Temp files a killed writer of this same file left (`.NAME.tmp-*`), old enough to be debris."""
    prefix = f".{target.name}.tmp-"
    now = time.time()
    try:
        for entry in target.parent.iterdir():
            if entry.name.startswith(prefix) and entry.is_file() and now - entry.stat().st_mtime > STALE_AFTER_S:
                entry.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write a file through a uniquely named temp file, check every byte landed, rename: readers never see half
    a file, and a full disk is an OSError naming `path` (never a 0-byte file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_file_leftovers(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        if tmp.stat().st_size != len(data):
            raise OSError(errno.EIO, f"only {tmp.stat().st_size} of {len(data)} bytes were written", str(target))
        apply_umask(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """atomic_write_bytes for UTF-8 text (results, manifests, reports)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
