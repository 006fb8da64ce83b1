"""Run one command as N local processes of a multi-process JAX run.

::

    python -m jaxinterp.launch -n 2 -- python train.py --steps 1000
    python -m jaxinterp.launch -n 2 --cpu-devices 2 -- python sweep.py    # 2 x 2 CPU devices

Each process gets the coordinator address, the process count and its own index in its
environment (``JAX_COORDINATOR_ADDRESS``, ``JAXINTERP_NUM_PROCESSES``, ``JAXINTERP_PROCESS_ID``);
``jaxinterp.distributed.initialize()`` in the command reads them. The coordinator listens on a
free port of this machine. Ctrl-C, SIGTERM and SIGHUP are passed on to every process; when one
process fails the others are stopped (they would otherwise wait for it at the next collective);
the exit status is 0 only when every process succeeded, else the first failure's status
(``128 + signal`` for a process killed by a signal).

On a cluster the scheduler starts the processes instead and JAX finds the settings itself:
``srun python train.py`` (SLURM), the same command on every host of a TPU pod, ``mpirun`` with
Open MPI. This module is for one machine: tests, several GPUs of one host, CPU experiments.

This module imports neither JAX nor the rest of jaxinterp.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

__all__ = ["COORDINATOR_ENV", "NUM_PROCESSES_ENV", "PROCESS_ID_ENV", "free_port", "process_env", "launch", "main"]

#: Set in each process: the coordinator's ``host:port`` (read by JAX itself), the process
#: count and the process's index (read by ``jaxinterp.distributed.initialize``).
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAXINTERP_NUM_PROCESSES"
PROCESS_ID_ENV = "JAXINTERP_PROCESS_ID"

_FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_env(process_id: int, num_processes: int, coordinator_address: str, *, cpu_devices: int | None = None,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of process ``process_id``: ``base`` (default ``os.environ``) plus the run's settings.

    Args:
      process_id: index of the process in ``[0, num_processes)``.
      num_processes: number of processes.
      coordinator_address: ``host:port`` of process 0's coordinator.
      cpu_devices: if given, the number of CPU devices each process exposes (``JAX_NUM_CPU_DEVICES``).
      base: the environment to extend.

    Returns:
      A new dict.
    """
    num_processes = _check_count(num_processes, "num_processes")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"`process_id` must be an int in [0, {num_processes}); got {process_id!r}.")
    if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
        raise ValueError(f"`coordinator_address` must be a 'host:port' string; got {coordinator_address!r}.")
    if cpu_devices is not None:
        cpu_devices = _check_count(cpu_devices, "cpu_devices")
    env = dict(os.environ if base is None else base)
    env.update({COORDINATOR_ENV: coordinator_address, NUM_PROCESSES_ENV: str(num_processes),
                PROCESS_ID_ENV: str(process_id)})
    if cpu_devices is not None:
        env["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)
    return env


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
    return value


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else code


def _die_with_parent() -> None:
    """In a child: get SIGTERM when the launcher dies, even by SIGKILL (Linux only; best effort)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM the processes still running; SIGKILL those still running ``grace`` seconds later."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(command: Sequence[str], num_processes: int, *, port: int | None = None, cpu_devices: int | None = None,
           env: Mapping[str, str] | None = None, grace: float = 10.0) -> int:
    """Run ``command`` as ``num_processes`` processes of one JAX run on this machine; wait for all.

    Args:
      command: the program and its arguments, e.g. ``["python", "train.py"]``.
      num_processes: how many processes to start.
      port: the coordinator's port (default: a free one).
      cpu_devices: CPU devices per process (``JAX_NUM_CPU_DEVICES``); default JAX's own.
      env: base environment of the processes (default ``os.environ``).
      grace: seconds the other processes get to finish after one fails, and to exit after
        SIGTERM before they are killed.

    Returns:
      0 when every process exited with 0; otherwise the first failure's exit status.
    """
    if isinstance(command, (str, bytes)) or not command or not all(isinstance(c, str) for c in command):
        raise ValueError(f"`command` must be a non-empty list of strings; got {command!r}.")
    num_processes = _check_count(num_processes, "num_processes")
    if cpu_devices is not None:
        cpu_devices = _check_count(cpu_devices, "cpu_devices")
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace < float("inf"):
        raise ValueError(f"`grace` must be a finite number of seconds >= 0; got {grace!r}.")
    address = f"127.0.0.1:{free_port() if port is None else port}"
    procs: list[subprocess.Popen] = []
    previous = {}

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in _FORWARDED:
        previous[sig] = signal.signal(sig, forward)
    try:
        for i in range(num_processes):
            procs.append(subprocess.Popen(
                list(command), env=process_env(i, num_processes, address, cpu_devices=cpu_devices, base=env),
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None))
        return _wait(procs, grace)
    finally:
        _stop(procs, grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(procs: list[subprocess.Popen], grace: float) -> int:
    """Wait for all; after the first failure give the rest ``grace`` seconds, then stop them."""
    failure, failed_at = None, None
    while True:
        codes = [p.poll() for p in procs]
        for code in codes:
            if code not in (None, 0) and failure is None:
                failure, failed_at = _exit_status(code), time.monotonic()
        if all(c is not None for c in codes):
            return 0 if failure is None else failure
        if failure is not None and time.monotonic() - failed_at > grace:
            _stop(procs, grace)
            return failure
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxinterp.launch -n N [--port P] [--cpu-devices K] -- COMMAND ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m jaxinterp.launch",
                                     description="Run COMMAND as N local processes of one multi-process JAX run.")
    parser.add_argument("-n", "--processes", type=int, required=True, help="number of processes")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("--cpu-devices", type=int, default=None, help="CPU devices per process")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds the others get after one process fails (default 10)")
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("give the command after --, e.g. -n 2 -- python train.py")
    try:
        return launch(command, args.processes, port=args.port, cpu_devices=args.cpu_devices, grace=args.grace)
    except ValueError as err:
        parser.error(str(err))
    except OSError as err:     # the command cannot be started (not found, not executable)
        print(f"python -m jaxinterp.launch: cannot start {command[0]!r}: {err.strerror or err}", file=sys.stderr)
        return 127
    return 2


if __name__ == "__main__":
    sys.exit(main())
