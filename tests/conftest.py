"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os

# XLA's default optimisation level on purpose: with LLVM -O0 codegen
# (--xla_backend_optimization_level=0), an 8-device training step intermittently aborts in
# the in-process all-reduce rendezvous (a participant never arrives) on a 2-core machine.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Entry points called in-process (the benchmark's main) keep XLA's default convolution
# library, whichever test touches JAX first; tests of the oneDNN setting start processes
# of their own.
os.environ.setdefault("JAXVISION_XLA_CPU_CONV", "ynnpack")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One persistent XLA compilation cache per test session, shared by both pytest-xdist workers
# and by every process they start (training drivers, command-line runs): the suite compiles
# the same small training and evaluation programs in dozens of processes, and on two cores
# that compilation was most of its time.  A cache hit is the executable XLA compiled for the
# same program and options, so what runs is unchanged.  The controller (or a plain pytest
# run) makes the directory before any worker starts; workers and subprocesses inherit it.
# A directory given by the caller is used as is (and kept).
if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache_dir = tempfile.mkdtemp(prefix="jaxvision-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
# Every program, however quick to compile: a training driver process also compiles a dozen
# small ones (schedules, metrics, checks) that the last process compiled already.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The day that picks the large config test_configs steps in this run, fixed by the controller
# so that both workers collect the same tests across midnight.
if "PYTEST_XDIST_WORKER" not in os.environ:
    import datetime

    os.environ.setdefault("JAXVISION_TEST_DAY", str(
        datetime.datetime.now(datetime.timezone.utc).date().toordinal()))

# XLA:CPU aborts the process when a device has waited 40 s in a collective's rendezvous for
# another device's thread.  On a loaded 2-core machine (two test workers, each running
# 8-device training drivers) a thread can be starved that long: a clean-clone CI run lost a
# 2-device driver to this SIGABRT in an eval step.  The tests give collectives the drivers'
# own 300 s limit instead.  The flag is jaxlib >= 0.10's (unknown flags abort XLA too).
# XLA reads its flags when the first backend starts, so importing jaxvision first is fine.
from jaxvision.backends.cpu.platform import jaxlib_version  # noqa: E402

if (jaxlib_version() or (0,)) >= (0, 10):
    os.environ["XLA_FLAGS"] += " --xla_cpu_collective_call_terminate_timeout_seconds=300"

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
    assert jax.device_count() == 8, "tests expect 8 simulated CPU devices"
    return jax.devices()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop jit caches after each test module, so that a worker's memory does not grow with
    every large model the suite has compiled."""
    yield
    import gc
    jax.clear_caches()
    gc.collect()
