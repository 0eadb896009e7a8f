"""SIGTERM and SIGINT (Ctrl-C) during training: finish the current step, checkpoint, exit.

Both signals set a flag that the training loop reads between steps; the loop then writes a
checkpoint at the current step and raises :class:`Preempted`, whose exit status says what
happened (``75`` for SIGTERM -- ``EX_TEMPFAIL``, "rerun to resume" --, ``130`` for SIGINT, the
shell's status for Ctrl-C).  A signal that arrives before the loop (while data loads or the
step compiles) stops the run at the next check with the same status and a message.  A second
Ctrl-C aborts at once (status 130, no checkpoint: the previous ones are intact).
"""
from __future__ import annotations

import os
import signal
import sys
import threading

PREEMPTED_EXIT_CODE = 75    # SIGTERM: EX_TEMPFAIL, rerun the command to resume
INTERRUPTED_EXIT_CODE = 130  # SIGINT: 128 + 2, as the shell reports Ctrl-C

EXIT_CODES = {signal.SIGTERM: PREEMPTED_EXIT_CODE, signal.SIGINT: INTERRUPTED_EXIT_CODE}


class Preempted(SystemExit):
    """Training stopped by a signal; ``step`` is the checkpointed step (None before the loop)."""

    def __init__(self, step, code: int = PREEMPTED_EXIT_CODE):
        super().__init__(code)
        self.step = step


class SignalFlag:
    """Set by SIGTERM / SIGINT while installed (main thread only; a no-op elsewhere)."""

    def __init__(self):
        self.event = threading.Event()
        self.signum: int | None = None
        self.previous: dict = {}

    def install(self) -> "SignalFlag":
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_CODES:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.event.is_set() and signum == signal.SIGINT:
            sys.stderr.write("Second interrupt: aborting without a checkpoint (earlier "
                             "checkpoints are intact).\n")
            sys.stderr.flush()
            os._exit(INTERRUPTED_EXIT_CODE)
        self.signum = signum
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "SIGTERM"

    def describe(self) -> str:
        return "Interrupted (SIGINT)" if self.signum == signal.SIGINT else (
            f"Preempted ({self.name})" if self.is_set() else "Preempted")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, PREEMPTED_EXIT_CODE)

    def stop_before_training(self, where: str):
        """Raise :class:`Preempted` if a signal came while setting up (nothing to save yet)."""
        if self.is_set():
            print(f"{self.name} received {where}: stopping before training (nothing new to "
                  f"save); rerun the command to resume.", flush=True)
            raise Preempted(None, self.exit_code)

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}


def exit_now(code: int):
    """Exit without interpreter shutdown, where orbax's and asyncio's threads print noise
    ('Event loop is closed') after the message that matters.  Call it only once everything
    is saved and closed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_on_signals():
    """Until training installs its own handlers: SIGTERM / SIGINT end the process at once
    with the documented status and a message (nothing has been written yet).  Called first
    thing by the command line; a signal while Python is still importing JAX (the first
    seconds) ends the process by the signal itself, also before anything is written."""
    def handle(signum, frame):
        name = signal.Signals(signum).name
        sys.stderr.write(f"{name} received while starting: stopped before training (nothing "
                         f"was written); rerun the command to start.\n")
        exit_now(EXIT_CODES[signum])
    if threading.current_thread() is threading.main_thread():
        for s in EXIT_CODES:
            signal.signal(s, handle)


def ignore_after_completion():
    """After a completed run (its last checkpoint and evaluation written): SIGTERM / SIGINT
    during the process's shut-down have nothing left to stop, and the exit status stays 0.
    Without this, a signal in the moment between the training loop's handlers being restored
    and the interpreter's exit ends a finished run with the signal's status (a library
    caller) or with the start-up message "stopped before training" (the command line)."""
    if threading.current_thread() is threading.main_thread():
        for s in EXIT_CODES:
            signal.signal(s, signal.SIG_IGN)
