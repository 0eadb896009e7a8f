"""One writer per workdir: an OS lock (``flock``) held for the life of the training process.

The lock lives on ``WORKDIR/.lock``.  The kernel drops a ``flock`` when the process that
holds it ends, however it ends (SIGKILL, a crash, the machine's OOM killer), so a killed run
never leaves a stale lock behind; the holder's host and pid, written into the file, are only
there to name it in the message a second trainer gets.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket


class WorkdirBusy(RuntimeError):
    """Another process is training in this workdir."""


class WorkdirLock:
    """``with WorkdirLock(workdir):`` -- hold the workdir's lock, or raise ``WorkdirBusy``."""

    NAME = ".lock"

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), self.NAME)
        self.fd: int | None = None

    def acquire(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirBusy(
                f"{os.path.dirname(self.path)} is in use by another trainer ({holder}); two "
                f"trainers in one workdir would overwrite each other's checkpoints and logs. "
                f"Wait for it to end, or train in another workdir") from None
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.ftruncate(fd, 0)  # the next holder writes its own name
            finally:
                os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown: it has not written its name yet"
