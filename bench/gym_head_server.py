"""NeMo Gym 0.7.0's own head server, alone, for bench/gym_compare.py: run by the gym tier's interpreter.

Gym's collector asks the head server for the run's config before it sends anything; `ng_run` would also start
every server the config names, which the side-by-side does not want (its agent is bench/instant_server.py).
Arguments are Gym's Hydra overrides (`+config_paths=[FILE]`; the file's `head_server` gives the port). Prints
`listening` once it answers and exits when stdin closes.
"""

import sys
import time
import urllib.request

from nemo_gym.server_utils import HeadServer, ServerClient

server, thread, _ = HeadServer.run_webserver()
config = ServerClient.load_head_server_config()
url = f"http://{config.host}:{config.port}/global_config_dict_yaml"
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(url, timeout=2).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"gym_head_server: {url} did not answer within 60 s")
        time.sleep(0.1)
print("listening", flush=True)
sys.stdin.read()
server.should_exit = True
thread.join(timeout=10)
