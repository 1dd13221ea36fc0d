"""`python -m tests.faults.nofile N COMMAND...`: run COMMAND with at most N open descriptors.

Sets RLIMIT_NOFILE (soft and hard) to N, then replaces itself with COMMAND (same PID), so a
test can start a node process at a descriptor limit of its choosing."""

import os
import resource
import sys

if __name__ == "__main__":
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    os.execv(sys.argv[2], sys.argv[2:])  # noqa: S606 (our own command line, no shell)
