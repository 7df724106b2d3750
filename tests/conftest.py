"""Process state that one test must not leave to the next, nor take from how pytest started.

A suite started as a background job of a script (`pytest ... &`, no job control) inherits
SIGINT ignored, and Python then installs no KeyboardInterrupt handler: a test that sends
itself SIGINT to play a user's Ctrl-C (tests/training/test_resume.py) saw nothing happen and
failed in such full runs while passing when run alone in a terminal. Every test runs with
Python's default SIGINT handler, as a command run in a terminal does.

Tests run in one process, and some drive code that changes process-wide state: Ray's
`ray.init` installs a SIGTERM handler that outlives `ray.shutdown()`, the CLI's `main()`
installs its own, training installs stop handlers while it runs. A test that relies on the
default behaviour of a signal it sends to itself (tests/training/test_resume.py sends SIGINT
from inside a loader) then passes alone and fails after such a test in a full run. Every test
gets the signal handlers and environment it started with back, and a test that changed them
gets a warning naming what it leaked, so the leak is fixed where it happens.
"""

from __future__ import annotations

import os
import signal
import threading
import warnings

import pytest

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PYTEST_OWN = "PYTEST_CURRENT_TEST"  # pytest sets it for every phase of every test


class LeakedStateWarning(UserWarning):
    """A test left a signal handler or an environment variable changed."""


@pytest.fixture(autouse=True)
def _no_leaked_process_state(request):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    inherited = signal.getsignal(signal.SIGINT)
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    environment = {k: v for k, v in os.environ.items() if k != _PYTEST_OWN}
    yield
    leaked = []
    for sig, handler in handlers.items():
        if signal.getsignal(sig) != handler and handler is not None:
            leaked.append(f"{signal.Signals(sig).name} handler")
            signal.signal(sig, handler)
    changed = sorted(k for k in set(os.environ) | set(environment)
                     if k != _PYTEST_OWN and os.environ.get(k) != environment.get(k))
    if changed:
        leaked.append(f"environment {changed}")
        for key in changed:
            if key in environment:
                os.environ[key] = environment[key]
            else:
                del os.environ[key]
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if leaked:
        warnings.warn(LeakedStateWarning(f"{request.node.nodeid} left {', '.join(leaked)} "
                                         "changed (restored)"), stacklevel=1)
