"""What the benchmark scripts (bench-bankd, bench-pcsc, bench-server) share:
waiting for the daemons they start, a private pcscd with vsmartcard's vpcd
inside the mount and network namespace they run in, and stopping their
processes within a bound."""

import os
import subprocess
import sys
import time

VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"


def wait_for(what, check, bound=20.0):
    """A benchmark script may poll: it waits for daemons it started."""
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"{os.path.basename(sys.argv[0])}: {what} did not happen within {bound} s")
        time.sleep(0.02)


def private_pcscd_dirs(work):
    """Inside a fresh mount and network namespace: loopback up, a tmpfs on
    /run/pcscd, and WORK/reader.conf.d holding the vpcd entry ("Virtual PCD
    00 00" and "00 01" on ports 35963 and 35964); returns that folder."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.makedirs("/run/pcscd", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/pcscd"], check=True)
    conf = os.path.join(work, "reader.conf.d")
    os.makedirs(conf)
    with open(os.path.join(conf, "vpcd"), "w") as f:
        f.write(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x8C7B\n'
                f"LIBPATH {VPCD_DRIVER}\nCHANNELID 0x8C7B\n")
    return conf


def stop(procs):
    """SIGTERM to every process (last started first), then SIGKILL to any
    still there after 5 s."""
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
