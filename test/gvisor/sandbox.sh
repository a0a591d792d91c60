#!/bin/bash
# Runs inside a gVisor sandbox (gvisor_test.go): an S3 server, the dataset
# uploaded with the AWS CLI, and s3cachefs mounted, read, prefetched,
# verified, dropped, remounted and unmounted, all inside the sandbox.
# Prints "RESULT name code" lines and the checker's "CHECK {...}" lines.
#   sandbox.sh S3CACHEFS VERSITYGW DATASET CHECK_PY
set -u
bin=$1 vgw=$2 dataset=$3 check=$4
w=$(mktemp -d)
mkdir -p "$w/s3/demo-bucket" "$w/mnt" "$w/cache" "$w/home"
export HOME=$w/home AWS_ACCESS_KEY_ID=gvisortest AWS_SECRET_ACCESS_KEY=gvisorsecret \
	AWS_DEFAULT_REGION=us-east-1 AWS_PAGER= S3CACHEFS_RUNTIME_DIR=$w/run GORACE=atexit_sleep_ms=0
ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
	"$vgw" --port 127.0.0.1:7070 --region us-east-1 --quiet posix "$w/s3" >"$w/vgw.log" 2>&1 &
/usr/bin/python3 - <<'PY'
import socket, time
deadline = time.time() + 20
while True:
    try:
        socket.create_connection(("127.0.0.1", 7070), 1).close()
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
PY
ep=http://127.0.0.1:7070
for split in train dev; do
	/usr/bin/aws --endpoint-url $ep s3 sync --no-progress --only-show-errors "$dataset/$split" "s3://demo-bucket/cache/tusz/$split/"
done
echo "RESULT upload $?"
src=s3://demo-bucket/cache/tusz
mnt=$w/mnt
"$bin" mount $src "$mnt" --cache-dir "$w/cache" --endpoint-url $ep --force-path-style
echo "RESULT mount $?"
/usr/bin/python3 "$check" "$mnt" "$dataset" 3
echo "RESULT check $?"
"$bin" prefetch --mount "$mnt" train dev >/dev/null
echo "RESULT prefetch $?"
"$bin" verify --mount "$mnt" --deep >/dev/null
echo "RESULT verify $?"
echo "STATUS $("$bin" status --mount "$mnt" --json | tr -d '\n')"
"$bin" drop "$mnt" >/dev/null
echo "RESULT drop $?"
echo "RESULT mounted_after_drop $(grep -c " $mnt " /proc/self/mountinfo)"
"$bin" mount $src "$mnt" --cache-dir "$w/cache" --endpoint-url $ep --force-path-style
echo "RESULT remount $?"
/usr/bin/python3 "$check" "$mnt" "$dataset" 2
echo "RESULT recheck $?"
echo "STATUS $("$bin" status --mount "$mnt" --json | tr -d '\n')"
pid=$("$bin" status --mount "$mnt" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
umount "$mnt"
echo "RESULT umount $?"
# A plain umount must stop the daemon: wait for it, within a bound.
/usr/bin/python3 - "$pid" <<'PY'
import os, sys, time
pid, deadline = int(sys.argv[1]), time.time() + 20
while time.time() < deadline:
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    if state in ("gone", "Z", "X"):
        print("RESULT daemon_exit 0")
        break
    time.sleep(0.05)
else:
    print("RESULT daemon_exit 1")
PY
echo "LOG-BEGIN"
cat "$w/cache/s3cachefs.log"
echo "LOG-END"
