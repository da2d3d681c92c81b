"""A process that hammers the store, for the crash and concurrency tests.

python -m tests.store_worker write PATH [--ebusy]   write consistent pairs a<n>/r<n> forever, print n after each save
python -m tests.store_worker read PATH SECONDS      read in a loop; exit 1 on a torn or mixed file
"""

from __future__ import annotations

import errno
import os
import sys
import time

from common.config import set_tokens, update_status
from common.store import ConfigStore, StoreBusy


def write_forever(path: str) -> None:
    store = ConfigStore(path)
    while True:
        def bump(doc: dict) -> int:
            n = int(doc["accounts"][0]["access_token"][1:]) + 1
            set_tokens(doc, "main", f"a{n}", f"r{n}")
            # A length that varies write to write, so a torn or mixed file cannot look whole.
            update_status(doc, "main", last_error="x" * (n * 37 % 500))
            return n
        n = store.update(bump)
        sys.stdout.write(f"{n}\n")
        sys.stdout.flush()


def read_for(path: str, seconds: float) -> int:
    store = ConfigStore(path)
    deadline, reads = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        try:
            doc = store.read_document(lock_wait=5.0)
        except StoreBusy:
            continue
        account = doc["accounts"][0]
        access, refresh = account["access_token"], account["refresh_token"]
        pad = account.get("status", {}).get("last_error", "")
        n = int(access[1:])
        if refresh != f"r{n}" or len(pad) != (n * 37 % 500 if n else len(pad)):
            print(f"inconsistent read: {access} {refresh} pad={len(pad)}", file=sys.stderr)
            return 1
        reads += 1
    print(reads)
    return 0


def main() -> int:
    mode, path = sys.argv[1], sys.argv[2]
    if "--ebusy" in sys.argv:
        # What a single-file bind mount does to rename(2).
        real_replace, target = os.replace, os.path.abspath(path)

        def busy_replace(src, dst, **kwargs):
            if os.path.abspath(dst) == target:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), dst)
            return real_replace(src, dst, **kwargs)
        os.replace = busy_replace
    if mode == "write":
        write_forever(path)
        return 0
    return read_for(path, float(sys.argv[3]))


if __name__ == "__main__":
    sys.exit(main())
