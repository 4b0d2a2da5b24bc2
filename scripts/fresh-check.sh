#!/usr/bin/env bash
# Prove that `make test` and `make up` work on a brand-new machine: debootstrap a Debian bookworm
# with nothing but python3 into a throwaway directory, clone this project into it, and run there,
# as a new user would, in a chroot that shares the host's network (to reach the same package
# registries) but nothing else:
#
#   1. bash scripts/bootstrap.sh      (a minimal Debian has no `make`; this installs it and the rest)
#   2. make test's set-up steps and a slice of the suite (own Redis, PostgreSQL and dockerd)
#   3. make up, then: /readyz answers 200, a task runs in a sandbox and pushes its branch, and
#      Ctrl-C stops it quietly
#
# Each step is reported with its time; the exit status is 0 only when every step passed.
# Not part of `make test` (it takes ~4 minutes and needs root). Usage, as root:
#
#   scripts/fresh-check.sh [--keep] [--suite SUITE] [--pytest "ARGS"]
#
# The project is cloned from HEAD: commit first. The new machine runs in its own mount and PID
# namespaces (its tree pivoted to be their root; the host's tree is not visible in it), so every
# mount and process it made is gone when it ends; its dockerd has its own socket, exec-root and
# data root inside the throwaway tree and never touches the host's /var/run/docker.sock. The host's apt sources and CA certificates are copied in (a proxy that
# intercepts TLS is trusted inside as it is outside).
set -euo pipefail

# ---------------------------------------------------------------- inside the chroot
if [ "${1:-}" = "--inside" ]; then
  shift
  cd "$(dirname "$0")/.."
  pytest_args=$1
  results=()
  failed=0
  step() {  # step <name> <command...>: run, indent its output, record ok/FAILED with the time
    local name=$1 t0=$SECONDS rc
    shift
    echo "=== step: $name"
    set +e
    "$@" 2>&1 | sed -u 's/^/    /'
    rc=${PIPESTATUS[0]}
    set -e
    local took=$((SECONDS - t0))
    if [ "$rc" -eq 0 ]; then
      results+=("ok      ${took}s  $name")
    else
      results+=("FAILED  ${took}s  $name (exit $rc)")
      failed=1
    fi
    echo "=== $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in ${took}s"
    return 0
  }
  need_ok() { [ "$failed" -eq 0 ] || { summary; exit 1; }; }
  summary() {
    echo "=== fresh-check summary (python3 $(python3 -c 'import sys; print(sys.version.split()[0])'), $(. /etc/os-release; echo "$PRETTY_NAME"))"
    printf '    %s\n' "${results[@]}"
  }

  what_is_here() {
    echo "python3: $(command -v python3) ($(python3 --version))"
    for tool in make git uv docker dockerd redis-server debootstrap pip; do
      printf '%s: %s\n' "$tool" "$(command -v "$tool" || echo missing)"
    done
    echo "HOME=$HOME: $(ls -A "$HOME" | wc -l) entries"
    python3 -m pip --version 2>&1 | head -1 || true
    ls /usr/lib/python3*/EXTERNALLY-MANAGED 2>/dev/null && echo "(PEP 668: the system Python is externally managed)"
  }

  up_check() {
    # `make up` as a user runs it, in its own process group so "Ctrl-C" reaches all of it.
    local port=18731 log=/tmp/make-up.log pid code=0
    export HANDOFF_PORT=$port REDIS_URL=redis://127.0.0.1:16379/0
    set -m  # a process group of its own, as a terminal gives a foreground job
    make up >"$log" 2>&1 &
    pid=$!
    set +m
    local url="http://127.0.0.1:$port" ready=0
    for _ in $(seq 600); do
      kill -0 "$pid" 2>/dev/null || break  # make up ended: no point waiting
      if python3 -c "import sys, urllib.request; print('readyz:', urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())" "$url/readyz" 2>/dev/null; then
        ready=1; break
      fi
      sleep 1
    done
    if [ "$ready" -ne 1 ]; then
      echo "the API never answered $url/readyz; make up printed:"; sed 's/^/  | /' "$log"
      kill -INT -- -"$pid" 2>/dev/null
      return 1
    fi
    echo "--- make up printed:"; sed 's/^/  | /' "$log"
    local repo=/tmp/fresh-repo.git seed=/tmp/fresh-seed
    rm -rf "$repo" "$seed"
    git init -q --bare -b main "$repo"
    git init -q -b main "$seed"
    git -C "$seed" -c user.name=fresh -c user.email=fresh@example.invalid commit -q --allow-empty -m seed
    git -C "$seed" push -q "$repo" main
    # As the README says: uv is in ~/.local/bin.
    export PATH=$HOME/.local/bin:$PATH
    echo "--- uv run handoff task create $repo \"echo hi > HI.md\""
    HANDOFF_API_URL=$url uv run --frozen handoff task create "$repo" "echo hi > HI.md" || code=$?
    if [ "$code" -eq 0 ]; then
      local branch
      branch=$(git --git-dir "$repo" for-each-ref --format='%(refname:short)' refs/heads/handoff/)
      echo "pushed: $branch, HI.md = $(git --git-dir "$repo" show "$branch:HI.md")"
      [ -n "$branch" ] || code=1
    fi
    echo "--- Ctrl-C (SIGINT to make up's process group)"
    local before
    before=$(wc -l <"$log")
    kill -INT -- -"$pid"
    local stopped=1
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || { stopped=0; break; }; sleep 0.1; done
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    echo "make up exited $rc (130: make itself got the SIGINT; it printed nothing)"
    echo "--- what make up printed after Ctrl-C:"; tail -n +"$((before + 1))" "$log" | sed 's/^/  | /'
    if [ "$stopped" -ne 0 ]; then echo "make up did not stop within 30 s"; code=1; fi
    if tail -n +"$((before + 1))" "$log" | grep -E -q 'Traceback|make: \*\*\*|Interrupt'; then
      echo "Ctrl-C was not quiet"; code=1
    fi
    # The dockerd that `make up` started (none answered): stop it before the namespace ends.
    [ -s /var/run/docker.pid ] && kill "$(cat /var/run/docker.pid)" 2>/dev/null || true
    return "$code"
  }

  step "what a new machine has" what_is_here
  step "bash scripts/bootstrap.sh" bash scripts/bootstrap.sh
  need_ok
  # `make test` with its own throwaway services (ports of their own: the network is the host's).
  export HANDOFF_TEST_REDIS_PORT=16390 HANDOFF_TEST_PG_PORT=15439 HANDOFF_SERVICES_DIR=/tmp/handoff-services
  # shellcheck disable=SC2086
  step "make test PYTEST_ARGS=\"$pytest_args\"" make test PYTEST_ARGS="$pytest_args"
  step "make up; /readyz; a task; Ctrl-C" up_check
  summary
  exit "$failed"
fi

# ---------------------------------------------------------------- on the host
keep=0
suite=bookworm
pytest_args="-q -x -p no:cacheprovider tests/test_cli.py tests/test_image.py"
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --suite) suite=$2; shift ;;
    --pytest) pytest_args=$2; shift ;;
    *) echo "usage: $0 [--keep] [--suite SUITE] [--pytest \"ARGS\"]" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
for tool in debootstrap unshare chroot git findmnt; do
  command -v "$tool" >/dev/null || { echo "fresh-check: $tool is missing (apt-get install debootstrap util-linux git)" >&2; exit 2; }
done
project=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$(git -C "$project" status --porcelain --untracked-files=no)" ]; then
  echo "fresh-check: uncommitted changes are NOT checked (the project is cloned from HEAD)"
fi
root=$(mktemp -d "${TMPDIR:-/var/tmp}/handoff-fresh.XXXXXX")
chmod 755 "$root"  # it becomes /: every user must be able to walk it
cleanup() {
  if [ "$keep" = 1 ]; then echo "fresh-check: kept $root"; return; fi
  # The mounts lived in a namespace that is gone; never delete through a mount that leaked.
  if findmnt -rn -o TARGET | grep -q "^$root"; then
    echo "fresh-check: mounts remain under $root; not deleting it" >&2
    return
  fi
  rm -rf "$root"
}
trap cleanup EXIT

t0=$SECONDS
echo "=== host: debootstrap --variant=minbase --include=python3 $suite $root"
debootstrap --variant=minbase --include=python3 "$suite" "$root" >"$root.debootstrap.log" 2>&1 \
  || { tail -20 "$root.debootstrap.log"; rm -f "$root.debootstrap.log"; exit 1; }
rm -f "$root.debootstrap.log"
echo "=== host: debootstrap ok in $((SECONDS - t0))s ($(du -sh "$root" | cut -f1))"

# The host's package sources, their keys and apt settings, its CA certificates and DNS.
mkdir -p "$root/etc/apt/sources.list.d" "$root/usr/share/keyrings" "$root/usr/local/share/ca-certificates"
rm -f "$root/etc/apt/sources.list"
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
rm -f "$root/etc/apt/sources.list.d/"*
cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$root/etc/apt/sources.list.d/" 2>/dev/null || true
cp /etc/apt/apt.conf.d/* "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
cp /etc/apt/trusted.gpg.d/* "$root/etc/apt/trusted.gpg.d/" 2>/dev/null || true
cp /usr/share/keyrings/* "$root/usr/share/keyrings/" 2>/dev/null || true
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# ... and again where update-ca-certificates looks, so installing ca-certificates keeps them.
cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/host-bundle.crt"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hosts "$root/etc/hosts"

echo "=== host: git clone $project (HEAD $(git -C "$project" rev-parse --short HEAD)) into the new machine"
git clone -q --no-hardlinks "$project" "$root/srv/handoff"

# A new mount and PID namespace: mounts and processes vanish with it. The new tree becomes the
# namespace's root with pivot_root (not a bare chroot): runc's `exec` (docker exec, health checks)
# joins a container's mount namespace and needs its root to be that namespace's root. The host's
# tree is then detached from the namespace altogether.
set +e
unshare --mount --pid --fork --propagation private -- bash -c '
  set -e
  root=$1; args=$2
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  mkdir -p "$root/.host"
  cd "$root"
  pivot_root . .host
  cd /
  umount -l /.host && rmdir /.host
  exec /usr/sbin/chroot / /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash /srv/handoff/scripts/fresh-check.sh --inside "$args"
' fresh-check "$root" "$pytest_args"
status=$?
set -e
echo "=== fresh-check: $([ "$status" -eq 0 ] && echo PASSED || echo "FAILED ($status)") in $((SECONDS - t0))s"
exit "$status"
