"""Processes under test: start, stop, and read RSS and CPU time from /proc."""

import ctypes
import os
import signal
import subprocess
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Runs in the child before exec: SIGKILL it when the driver dies, so an
    interrupted run leaves no operator or webhook behind (taskset execs the
    target, which keeps the setting)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Proc:
    """A child process with its output in a log file. Stopped by its own pid only."""

    def __init__(self, name, argv, log_path, env=None, cpus=None):
        self.name = name
        if cpus is not None:
            argv = ["taskset", "-c", cpus] + list(argv)
        self.log_path = log_path
        self.log = open(log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.started_at = time.time()
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=full_env,
                                      preexec_fn=_die_with_parent)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def check(self):
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; "
                               f"log {self.log_path}:\n{tail(self.log_path)}")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.log.close()

    def rss_mib(self):
        return status_kib(self.pid, "VmRSS") / 1024

    def hwm_mib(self):
        return status_kib(self.pid, "VmHWM") / 1024

    def cpu_seconds(self):
        return cpu_seconds(self.pid)


def tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError:
        return ""


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid):
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def http_ok(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def wait_until(what, pred, timeout, interval=0.1, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None:
            proc.check()
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_quiet(proc, window=3.0, max_cpu_frac=0.05, timeout=120):
    """Waits until `proc` used under max_cpu_frac of a core over `window` seconds.
    Returns False on timeout (the caller records that)."""
    deadline = time.time() + timeout
    prev_t, prev_c = time.time(), proc.cpu_seconds()
    while time.time() < deadline:
        time.sleep(window)
        proc.check()
        t, c = time.time(), proc.cpu_seconds()
        if (c - prev_c) / (t - prev_t) < max_cpu_frac:
            return True
        prev_t, prev_c = t, c
    return False
