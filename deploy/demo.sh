#!/usr/bin/env bash
# `make demo`: one host's engine, start to finish. Starts a daemon (in a network
# namespace of its own, so the machine's network is untouched), makes the busybox
# base image from Debian's busybox-static, runs containers, lists them, stops.
set -euo pipefail
cd "$(dirname "$0")/.."

PYSWARM="$PWD/.venv/bin/pyswarm"
WORK=$(mktemp -d /tmp/pyswarm-demo.XXXXXX)
NETNS="pyswarm-demo-$$"
export PYSWARM_HOST="unix://$WORK/pyswarm.sock"
DAEMON_PID=""

cleanup() {
    set +e
    if [[ -n "$DAEMON_PID" ]]; then
        ids=$("$PYSWARM" ps -a -q 2>/dev/null)
        [[ -n "$ids" ]] && "$PYSWARM" rm -f $ids >/dev/null
        kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    fi
    ip netns delete "$NETNS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
nsenter --net="/run/netns/$NETNS" "$PYSWARM" daemon --data-root "$WORK/data" \
    --metrics-addr "" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do
    [[ -S "$WORK/pyswarm.sock" ]] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log"; exit 1; }
    sleep 0.1
done
echo "daemon running (pid $DAEMON_PID), data root $WORK/data, socket $PYSWARM_HOST"

.venv/bin/python -m deploy.baseimage busybox "$WORK/busybox.tar"
step pyswarm image import -c 'CMD ["sh"]' busybox.tar busybox
"$PYSWARM" image import -c 'CMD ["sh"]' "$WORK/busybox.tar" busybox

step pyswarm run --rm busybox echo "Hello from a pyswarm container"
"$PYSWARM" run --rm busybox echo "Hello from a pyswarm container"

step pyswarm run --name hello --memory 64m --pids-limit 50 busybox sh -c '...'
"$PYSWARM" run --name hello --memory 64m --pids-limit 50 busybox \
    sh -c 'echo "hostname: $(hostname)"; echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"; id'

step pyswarm run -d --name web -p 8080:80 busybox sh -c '... httpd -f -p 80 -h /www'
"$PYSWARM" run -d --name web -p 8080:80 busybox \
    sh -c 'mkdir /www && echo "hello from a published port" > /www/index.html && exec httpd -f -p 80 -h /www'
step wget -q -O - http://127.0.0.1:8080/ '  # from the host (its network namespace)'
for _ in $(seq 50); do
    # busybox-static's `wget -T` segfaults: bound it with timeout(1) instead.
    nsenter --net="/run/netns/$NETNS" timeout 5 busybox wget -q -O - http://127.0.0.1:8080/ \
        2>/dev/null && break
    sleep 0.1
done
step pyswarm exec web sh -c 'echo "in $(hostname): $(ls /www)"'
"$PYSWARM" exec web sh -c 'echo "in $(hostname): $(ls /www)"'
step pyswarm ps -a
"$PYSWARM" ps -a
step pyswarm images
"$PYSWARM" images
step pyswarm logs hello
"$PYSWARM" logs hello
# Build and ship: a Dockerfile build, then a push to and pull from pyswarm's own
# registry, served inside the demo's network namespace.
mkdir -p "$WORK/app"
cat >"$WORK/app/Dockerfile" <<'DOCKERFILE'
FROM busybox
WORKDIR /app
COPY greeting.txt .
RUN echo "built at $(date -u +%H:%M:%S)" > built.txt
CMD ["sh", "-c", "cat /app/greeting.txt /app/built.txt"]
DOCKERFILE
echo "hello from a built image" >"$WORK/app/greeting.txt"
step pyswarm build -t hello-app:1 app/
"$PYSWARM" build -t hello-app:1 "$WORK/app"
step pyswarm build -t hello-app:1 app/ '  # again: every step from the cache'
"$PYSWARM" build -t hello-app:1 "$WORK/app" | grep -E "Step|cache|Successfully built"

nsenter --net="/run/netns/$NETNS" "$PYSWARM" registry serve --addr 127.0.0.1:5000 \
    --root "$WORK/registry" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 100); do
    nsenter --net="/run/netns/$NETNS" timeout 2 busybox wget -q -O /dev/null \
        http://127.0.0.1:5000/v2/ 2>/dev/null && break
    sleep 0.1
done
step pyswarm tag hello-app:1 127.0.0.1:5000/demo/hello-app:1 '&&' pyswarm push ...
"$PYSWARM" tag hello-app:1 127.0.0.1:5000/demo/hello-app:1
"$PYSWARM" push 127.0.0.1:5000/demo/hello-app:1
step pyswarm rmi hello-app:1 127.0.0.1:5000/demo/hello-app:1 '&&' pyswarm run --rm 127.0.0.1:5000/demo/hello-app:1
"$PYSWARM" rmi hello-app:1 127.0.0.1:5000/demo/hello-app:1 >/dev/null
"$PYSWARM" run --rm 127.0.0.1:5000/demo/hello-app:1
kill -TERM "$REGISTRY_PID" && wait "$REGISTRY_PID"

step pyswarm stop web '&&' pyswarm rm web hello
"$PYSWARM" stop web >/dev/null
"$PYSWARM" rm web hello
echo
echo "demo done; stopping the daemon"
