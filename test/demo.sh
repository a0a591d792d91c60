#!/usr/bin/env bash
# The main job of s3cachefs, end to end, on a machine of its own:
#
#   1. start a local S3 server (versitygw) on 127.0.0.1 with a temp dir
#   2. generate a sample dataset: real .npz files in train/ and dev/
#   3. upload it with the AWS CLI, as the upload guide does (aws s3 sync)
#   4. mount s3://demo-bucket/cache/tusz, list it, load a file with numpy
#   5. prefetch train and dev with progress, read everything from SSD
#   6. show status, remount to show cached reads make zero GETs, drop --purge
#
# Run it with `make demo` (which installs what is missing and builds
# bin/s3cachefs). Everything lives in one temp dir, removed at the end; the
# mount and the server are cleaned up however the script ends.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${S3CACHEFS_BIN:-$ROOT/bin/s3cachefs}
AWS=/usr/bin/aws
PY=/usr/bin/python3
VERSITYGW=${VERSITYGW:-$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")}
BUCKET=demo-bucket

for tool in "$BIN" "$AWS" "$PY" "$VERSITYGW"; do
	if [ ! -x "$tool" ]; then
		echo "demo: $tool is missing; run 'make demo' (it installs and builds what is needed)" >&2
		exit 1
	fi
done

WORK=$(mktemp -d /tmp/s3cachefs-demo.XXXXXX)
MNT=$WORK/results/cache/tusz # where the trainer reads, as on the training node
CACHE=$WORK/ssd/s3cachefs    # the local SSD cache
SERVER_PID=""

cleanup() {
	local status=$?
	set +e
	[ "$status" = 0 ] || echo "demo: FAILED (exit $status); cleaning up" >&2
	if grep -q " $MNT fuse.s3cachefs " /proc/mounts; then
		"$BIN" drop --force "$MNT" >/dev/null 2>&1 || umount -l "$MNT"
	fi
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

# drop_mount runs `s3cachefs drop [FLAGS] $MNT`.
drop_mount() {
	show "$BIN" drop "$@" "$MNT"
}

heading() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
# show prints a command, then runs it.
show() {
	printf '$ %s\n' "$*"
	"$@"
}

# The demo's credentials: random, known only to this server and its clients.
export AWS_ACCESS_KEY_ID=demo$($PY -c 'import secrets; print(secrets.token_hex(6))')
export AWS_SECRET_ACCESS_KEY=$($PY -c 'import secrets; print(secrets.token_hex(20))')
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# Keep the machine's own AWS config and instance metadata out of the demo.
export AWS_CONFIG_FILE=$WORK/no-aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/no-aws-credentials
export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""
unset AWS_PROFILE AWS_ENDPOINT_URL AWS_SESSION_TOKEN
# Control sockets of this demo's mount go in its temp dir.
export S3CACHEFS_RUNTIME_DIR=$WORK/run

heading "1. Start a local S3 server (versitygw) on 127.0.0.1"
PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ENDPOINT=http://127.0.0.1:$PORT
mkdir -p "$WORK/s3"
ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
	"$VERSITYGW" --port "127.0.0.1:$PORT" --region "$AWS_REGION" posix "$WORK/s3" >"$WORK/versitygw.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
	kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/versitygw.log"; exit 1; }
	sleep 0.1
done
echo "S3 endpoint: $ENDPOINT (data in $WORK/s3)"

heading "2. Generate a sample dataset: .npz files in cache/tusz/train and cache/tusz/dev"
cd "$WORK"
show "$PY" "$ROOT/test/gen_dataset.py" cache/tusz
show ls -l cache/tusz/train cache/tusz/dev

heading "3. Upload it with the AWS CLI, as the upload guide does"
show "$AWS" --endpoint-url "$ENDPOINT" s3 mb "s3://$BUCKET"
show "$AWS" --endpoint-url "$ENDPOINT" s3 sync --no-progress cache/tusz/train "s3://$BUCKET/cache/tusz/train/"
show "$AWS" --endpoint-url "$ENDPOINT" s3 sync --no-progress cache/tusz/dev "s3://$BUCKET/cache/tusz/dev/"
show "$AWS" --endpoint-url "$ENDPOINT" s3 ls "s3://$BUCKET/cache/tusz/"

heading "4. Mount s3://$BUCKET/cache/tusz at $MNT"
mkdir -p "$MNT"
MOUNT=("$BIN" mount "s3://$BUCKET/cache/tusz" "$MNT" --cache-dir "$CACHE" --endpoint-url "$ENDPOINT" --force-path-style)
show "${MOUNT[@]}"
show grep fuse.s3cachefs /proc/mounts

heading "5. List it: sizes and dates come from S3's listing, nothing is downloaded"
show ls -l "$MNT"
show ls -l "$MNT/train"

heading "6. Load one file with numpy, through the mount (its first read: fetched from S3 on demand)"
FIRST=$(cd "$MNT/train" && ls ./*.npz | head -1)
FIRST=${FIRST#./}
show "$PY" -c 'import sys, numpy as np; z = np.load(sys.argv[1]); [print(k, z[k].shape, z[k].dtype) for k in z.files]' "$MNT/train/$FIRST"

heading "7. Prefetch both splits into the SSD cache, with progress"
show "$BIN" prefetch --mount "$MNT" --interval 200ms train dev

heading "8. Read every file and compare it with the original (all from SSD now)"
for f in cache/tusz/train/* cache/tusz/dev/*; do
	rel=${f#cache/tusz/}
	if cmp -s "$f" "$MNT/$rel"; then
		echo "same bytes: $rel"
	else
		echo "DIFFERENT: $rel" >&2
		exit 1
	fi
done

heading "9. What the cache holds"
show "$BIN" status --mount "$MNT"

heading "10. Drop the mount, mount again with the same cache dir, read everything again"
drop_mount
show "${MOUNT[@]}"
show sh -c "cat '$MNT'/train/* '$MNT'/dev/* | wc -c"
show "$BIN" status --mount "$MNT"
GETS=$("$BIN" status --mount "$MNT" --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["s3_get_requests"])')
echo "S3 GET requests since the remount: $GETS"
if [ "$GETS" != 0 ]; then
	echo "demo: expected every read after the remount to come from the SSD cache" >&2
	exit 1
fi

heading "11. Drop the mount and delete the cache"
drop_mount --purge
if [ -e "$CACHE" ]; then show ls -la "$CACHE"; else echo "$CACHE is gone"; fi
grep -q " $MNT " /proc/mounts && { echo "demo: $MNT is still mounted" >&2; exit 1; }

heading "Done: mounted, listed, loaded with numpy, prefetched, served from cache, dropped"
