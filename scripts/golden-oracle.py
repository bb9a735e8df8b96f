#!/usr/bin/env python3
"""Replays golden control scripts against the real mosquitto 2.0.11 + dynsec plugin.

    scripts/golden-oracle.py fill  dynsec/tests/golden/*.txt   # write the oracle's replies into '< ?' / '<2.0.11 ?'
    scripts/golden-oracle.py check dynsec/tests/golden/*.txt   # report where the oracle disagrees

Script format (also read by dynsec/tests/golden.rs and tests/tests/e2e/golden_oracle.rs):
    > <request payload>           one control message
    < <expected reply>            our expected reply
    <2.0.11 <reply>               what mosquitto 2.0.11 answers where we deliberately differ
    ! kick <user|anonymous> ...   kicks we expect after the request (not observable via the oracle)
    #oracle-skip                  the next request is not sent to mosquitto (it would crash 2.0.11)
    # comment

'fill' is a development aid: every filled line is reviewed against mosquitto-compat.md before commit.
Each script starts from a configuration made by `mosquitto_ctrl dynsec init <file> admin <pw>`.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ADMIN_PASSWORD = "golden-admin-pw"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        d = self.dir.name
        self.port = free_port()
        ds = os.path.join(d, "ds.json")
        subprocess.run(["mosquitto_ctrl", "dynsec", "init", ds, "admin", ADMIN_PASSWORD], check=True,
                       stdout=subprocess.DEVNULL)
        conf = os.path.join(d, "m.conf")
        with open(conf, "w") as f:
            f.write(f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous false\n"
                    f"plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
                    f"plugin_opt_config_file {ds}\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def request(self, payload):
        out = subprocess.run(
            ["mosquitto_rr", "-h", "127.0.0.1", "-p", str(self.port), "-u", "admin", "-P", ADMIN_PASSWORD,
             "-t", "$CONTROL/dynamic-security/v1", "-e", "$CONTROL/dynamic-security/v1/response",
             "-m", payload, "-W", "5"], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"mosquitto_rr failed ({out.returncode}): {out.stderr.strip()} for {payload}")
        return out.stdout.rstrip("\n")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.dir.cleanup()


def process(path, mode):
    lines = open(path, encoding="utf-8").read().split("\n")
    broker = Mosquitto()
    problems = 0
    try:
        skip_next = False
        reply = None
        for i, line in enumerate(lines):
            if line.startswith("#oracle-skip"):
                skip_next = True
            elif line.startswith("> "):
                reply = None if skip_next else broker.request(line[2:])
                skip_next = False
            elif reply is not None and (line.startswith("< ") or line.startswith("<2.0.11 ")):
                tag, expected = line.split(" ", 1)
                has_oracle_line = i + 1 < len(lines) and lines[i + 1].startswith("<2.0.11 ")
                if tag == "<" and has_oracle_line:
                    continue  # we differ here on purpose; the next line holds the oracle's reply
                if expected == "?" and mode == "fill":
                    lines[i] = f"{tag} {reply}"
                elif expected != reply:
                    problems += 1
                    print(f"{path}:{i + 1}: oracle says {reply}")
    finally:
        broker.stop()
    if mode == "fill":
        open(path, "w", encoding="utf-8").write("\n".join(lines))
    return problems


def main():
    mode, paths = sys.argv[1], sys.argv[2:]
    problems = sum(process(p, mode) for p in paths)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
