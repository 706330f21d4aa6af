"""The Ray a job starts for itself is the job's own: Ray's servers listen on every interface, so
it requires a random token that only the job's processes hold; a client without it is refused."""

from __future__ import annotations

import os
import subprocess
import sys

DRIVER = """
import os, sys
from listcon.jobs.runtime import start_ray
start_ray(num_cpus=1, object_store_mb=80)
import ray
print(ray.get(ray.remote(lambda: 41 + 1).remote()), ray.get_runtime_context().gcs_address, os.environ["RAY_AUTH_TOKEN"],
      flush=True)
sys.stdin.read()
"""
CLIENT = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print('connected')"


def test_a_client_without_the_jobs_token_is_refused():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        answer, address, token = driver.stdout.readline().split()
        assert answer == "42" and len(token) == 64  # the job's own workers hold the token

        def connect(auth: dict) -> bool:
            out = subprocess.run([sys.executable, "-c", CLIENT, address], env={**env, **auth}, capture_output=True,
                                 text=True, timeout=120)
            return out.returncode == 0 and "connected" in out.stdout

        assert connect({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        assert not connect({"RAY_AUTH_MODE": "disabled"})
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)
