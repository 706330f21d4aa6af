"""A normal run prints listcon's own log lines, not third-party notices: no lance fork-safety warning, no Ray
Data progress or execution notices. (One line remains that listcon does not write: the Ray core worker's
C++ notice about actor constructor arguments, printed by the driver's C++ logger; see docs/reliability.md.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from conftest import data_dir
from listcon.jobs.lock import LOCK_FILE
from test_faults import ENV

OURS = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) listcon[.\w]*: ")
RAY_CORE_NOTICE = re.compile(r"\[[-\d :,]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has constructor arguments")


def test_embed_and_retrieve_print_no_third_party_notices(adi_embedded, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(adi_embedded, work, ignore=shutil.ignore_patterns(LOCK_FILE, "passages.lance", "candidates"))
    env = {k: v for k, v in ENV.items() if not k.startswith("RAY_DATA_LOG")}
    for argv in (["embed", str(data_dir("adi")), "--workdir", str(work)], ["index", "--workdir", str(work)],
                 ["retrieve", str(data_dir("adi")), "--workdir", str(work), "--split", "test", "--k", "50"]):
        done = subprocess.run([sys.executable, "-m", "listcon.jobs.cli", *argv, "--no-progress"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        foreign = [line for line in lines if not OURS.match(line) and not RAY_CORE_NOTICE.match(line)]
        assert not foreign, f"{argv[0]} printed lines listcon did not write: {foreign[:5]}"
        assert argv[0] == "index" or any("encoded 82 passages" in l or "35 queries x top-50" in l for l in lines)
