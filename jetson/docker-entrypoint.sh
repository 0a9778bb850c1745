#!/bin/sh
# Entrypoint of the wbc-edge image: refuse a read-only /data with the fix, then become wbc-edge
# (exec: it is PID 1 and receives docker's STOPSIGNAL, SIGINT, itself).
set -eu
DATA="${WBC_EDGE_DATA:-/data}"
if [ -d "$DATA" ] && ! [ -w "$DATA" ]; then
  uid="$(id -u)"
  gid="$(id -g)"
  echo "error: $DATA is not writable by uid $uid: on the host run" \
    "'sudo chown $uid:$gid FOLDER' for the folder mounted at $DATA," \
    "or mount a named volume instead (-v wbc-edge-data:$DATA)" >&2
  exit 2
fi
exec wbc-edge "$@"
