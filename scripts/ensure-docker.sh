#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: install docker.io and start dockerd when we can.
# Exit 0 when `docker info` works; otherwise say what is missing and exit 1.
set -u
log=${REFEREE_DOCKERD_LOG:-/tmp/referee-dockerd.log}
sudo_cmd=""
if [ "$(id -u)" != "0" ]; then
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo_cmd="sudo -n"
fi

engine_ok() { docker info >/dev/null 2>&1; }

if engine_ok; then exit 0; fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] || [ -n "$sudo_cmd" ]; then
    echo "referee: installing docker.io (Docker engine) from Debian packages..." >&2
    $sudo_cmd apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq docker.io >/dev/null 2>&1 || {
      echo "referee: could not install docker.io; install a Docker engine and re-run" >&2; exit 1; }
  else
    echo "referee: no Docker engine and not root: install docker.io and start dockerd (needs root)" >&2
    exit 1
  fi
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] || [ -n "$sudo_cmd" ]; then
    echo "referee: starting dockerd in the background (log: $log)..." >&2
    nohup $sudo_cmd dockerd >"$log" 2>&1 &
  else
    echo "referee: dockerd is not running and starting it needs root" >&2
    exit 1
  fi
fi

for _ in $(seq 1 60); do
  if engine_ok; then exit 0; fi
  sleep 1
done
echo "referee: dockerd did not answer within 60s; last lines of $log:" >&2
tail -n 20 "$log" >&2 2>/dev/null
exit 1
