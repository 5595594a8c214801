#!/usr/bin/env bash
# `make demo`: one host's engine, start to finish, then a swarm. Starts a daemon (in a
# network namespace of its own, so the machine's network is untouched), makes the
# busybox base image from Debian's busybox-static, runs containers, builds and ships an
# image; then builds a five-host lab (3 managers, 2 workers, each a namespace with its
# own daemon), manages its nodes, kills the Raft leader and shows the failover.
set -euo pipefail
cd "$(dirname "$0")/.."

PYSWARM="$PWD/.venv/bin/pyswarm"
WORK=$(mktemp -d /tmp/pyswarm-demo.XXXXXX)
NETNS="pyswarm-demo-$$"
export PYSWARM_HOST="unix://$WORK/pyswarm.sock"
DAEMON_PID=""
LAB="demo$$"

cleanup() {
    set +e
    if [[ -n "$DAEMON_PID" ]]; then
        ids=$("$PYSWARM" ps -a -q 2>/dev/null)
        [[ -n "$ids" ]] && "$PYSWARM" rm -f $ids >/dev/null
        kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    fi
    ip netns delete "$NETNS" 2>/dev/null
    "$PYSWARM" lab down --name "$LAB" >/dev/null 2>&1
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

# Swarm mode: a lab of five hosts, Raft between the managers, mTLS everywhere.
in_lab() { local node=$1; shift; "$PYSWARM" lab exec --name "$LAB" "$node" -- "$@"; }
step pyswarm lab up --managers 3 --workers 2
"$PYSWARM" lab up --name "$LAB" --managers 3 --workers 2
step pyswarm lab exec m1 -- pyswarm node ls
in_lab m1 pyswarm node ls
step pyswarm lab exec m2 -- pyswarm node update --label-add zone=east w1 '&&' pyswarm node promote w2
in_lab m2 pyswarm node update --label-add zone=east w1
in_lab m2 pyswarm node promote w2
step pyswarm lab exec w2 -- pyswarm node inspect --pretty w1
for _ in $(seq 100); do  # w2 answers once it has joined Raft as a manager
    in_lab w2 pyswarm node inspect --pretty w1 2>/dev/null && break
    sleep 0.1
done
in_lab m3 pyswarm node demote w2 >/dev/null

step "the cluster registry: push on m1 (198.18.0.11:5000, TLS from the cluster CA), run on w1"
in_lab m1 pyswarm image import -c 'CMD ["sh"]' "$WORK/busybox.tar" 198.18.0.11:5000/demo/busybox:1 >/dev/null
in_lab m1 pyswarm push 198.18.0.11:5000/demo/busybox:1 | tail -1
in_lab w1 pyswarm run --rm 198.18.0.11:5000/demo/busybox:1 echo "pulled from the swarm's registry"

# Services: busybox is only in m1's store; the manager pins it in the cluster registry
# and every node pulls exactly that digest.
in_lab m1 pyswarm image import -c 'CMD ["sh"]' "$WORK/busybox.tar" busybox >/dev/null
step pyswarm lab exec m1 -- pyswarm service create --name web --replicas 6 busybox sleep 3600
in_lab m1 pyswarm service create --name web --replicas 6 --stop-grace-period 1s busybox sleep 3600
step pyswarm lab exec m1 -- pyswarm service ls
in_lab m1 pyswarm service ls
step pyswarm lab exec m1 -- pyswarm service ps web
in_lab m1 pyswarm service ps web
step pyswarm lab exec m1 -- pyswarm service update --update-parallelism 3 --env-add MODE=2 web
in_lab m1 pyswarm service update --update-parallelism 3 --update-monitor 1s --env-add MODE=2 web
step pyswarm lab exec m1 -- pyswarm service scale web=2
in_lab m1 pyswarm service scale web=2
step "printf s3cret | pyswarm secret create db_pass -" '&&' pyswarm service create --secret db_pass ...
printf s3cret | in_lab m1 pyswarm secret create db_pass - >/dev/null
in_lab m1 pyswarm service create -d --name reader --secret db_pass --constraint node.role==worker \
    busybox sh -c 'echo "the secret is $(cat /run/secrets/db_pass)"; sleep 3600' >/dev/null
step pyswarm lab exec m1 -- pyswarm service logs reader
for _ in $(seq 100); do  # until the task has started and written its line
    out=$(in_lab m1 pyswarm service logs reader 2>/dev/null) && [[ -n "$out" ]] && break
    sleep 0.2
done
echo "$out"
in_lab m1 pyswarm service rm reader >/dev/null

# Overlay networks: VXLAN between the hosts, the embedded DNS, VIPs and the routing mesh.
WEB='mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'
step pyswarm lab exec m1 -- pyswarm network create --attachable front
in_lab m1 pyswarm network create --attachable front >/dev/null
step pyswarm lab exec m1 -- pyswarm network ls
in_lab m1 pyswarm network ls
step pyswarm lab exec m1 -- pyswarm service create --name hello --replicas 3 --network front -p 8080:80 busybox sh -c "'...httpd...'"
in_lab m1 pyswarm service create -d --name hello --replicas 3 --network front -p 8080:80 \
    --constraint node.role==worker --stop-grace-period 1s busybox sh -c "$WEB" >/dev/null
for _ in $(seq 150); do  # until the three replicas run
    [[ "$(in_lab m1 pyswarm service ls --format json | python3 -c \
        'import json,sys; print(next(d["Replicas"] for d in map(json.loads, sys.stdin) if d["Name"] == "hello"))')" == 3/3 ]] && break
    sleep 0.2
done
step pyswarm lab exec m1 -- pyswarm run --rm --network front busybox sh -c "'nslookup hello; nslookup tasks.hello; wget http://hello/ x4'"
in_lab m1 pyswarm run --rm --network front busybox sh -c \
    'nslookup hello | tail -n +4; nslookup tasks.hello | tail -n +4; for i in 1 2 3 4; do timeout 3 wget -q -O- http://hello/; done'
step "the routing mesh: port 8080 of m1, which runs no replica of hello"
for i in 1 2 3; do in_lab w1 timeout 3 busybox wget -q -O- http://198.18.0.11:8080/; done
in_lab m1 pyswarm service rm hello >/dev/null

# Stacks: a compose file deploys a whole application (images built from deploy/demo/).
step pyswarm lab exec m1 -- pyswarm stack deploy --build -c deploy/demo/stack.yml demo
in_lab m1 pyswarm stack deploy --build -c "$PWD/deploy/demo/stack.yml" demo
for _ in $(seq 300); do  # until the 3 web replicas run and the mesh answers
    [[ "$(in_lab m1 pyswarm service ls --format json | python3 -c \
        'import json,sys; print(next(d["Replicas"] for d in map(json.loads, sys.stdin) if d["Name"] == "demo_web"))')" == 3/3 ]] \
        && in_lab w1 timeout 3 busybox wget -q -O /dev/null http://198.18.0.11:8080/ 2>/dev/null && break
    sleep 0.2
done
step pyswarm lab exec m1 -- pyswarm stack services demo
in_lab m1 pyswarm stack services demo
step "port 8080 of m1 (no web task there): the web replicas, and the backend through DNS"
for i in 1 2 3; do in_lab w1 timeout 3 busybox wget -q -O- http://198.18.0.11:8080/; done
in_lab w1 timeout 3 busybox wget -q -O- http://198.18.0.11:8080/cgi-bin/backend
in_lab m1 pyswarm stack rm demo >/dev/null

LEADER=$(in_lab m1 pyswarm node ls --format json | python3 -c \
    'import json,sys; print(next(d["Hostname"] for d in map(json.loads, sys.stdin) if d["ManagerStatus"] == "Leader"))')
LEADER_PID=$("$PYSWARM" lab ls --name "$LAB" --format json | python3 -c \
    "import json,sys; print(next(d['pid'] for d in map(json.loads, sys.stdin) if d['name'] == '$LEADER'))")
OTHER=$([[ "$LEADER" == m1 ]] && echo m2 || echo m1)
step "kill -9 <the daemon of the leader, $LEADER>" '&&' pyswarm lab exec "$OTHER" -- pyswarm node update --label-add after=failover w1
START=$(date +%s.%N)
kill -KILL "$LEADER_PID"
until in_lab "$OTHER" pyswarm node update --label-add after=failover w1 >/dev/null 2>&1; do :; done
echo "a write was acknowledged $(python3 -c "print(f'{$(date +%s.%N) - $START:.2f}')") s after the kill (CLI start-up included)"
step pyswarm lab exec "$OTHER" -- pyswarm node ls
in_lab "$OTHER" pyswarm node ls
step pyswarm lab exec "$OTHER" -- pyswarm service ls "  # the services outlive the leader"
in_lab "$OTHER" pyswarm service ls
step pyswarm lab down
"$PYSWARM" lab down --name "$LAB"

echo
echo "demo done; stopping the daemon"
