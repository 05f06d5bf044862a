#!/usr/bin/env python3
"""Server CPU per request by component, from the profiles `LOAD_PERF=DIR cargo bench
--bench load` records over each capacity row.

    python3 benches/tools/perf_by_component.py DIR/sqlite-100000-1x10-tern.data:79.0 \\
        DIR/sqlite-100000-1x10-no-op_floor.data:42.4

Each argument is a profile and the server CPU per request (µs) the same row printed; the
table gives each component's share of the samples and that share of the CPU, in µs per
request, one column per profile. Components are named by the symbol's crate or library.
"""

import collections
import subprocess
import sys

# (component, test on (dso, symbol)), first match wins.
COMPONENTS = [
    ("kernel: syscalls, TCP loopback, scheduler", lambda d, s: d.startswith("[kernel")),
    # SQLite is compiled into the binary; it is the only C code there on a plaintext run.
    ("SQLite (C library)", lambda d, s: not d.startswith(("libc", "ld-", "[")) and "::" not in s
     and not s.startswith("_") and "rust" not in s),
    ("rusqlite", lambda d, s: "rusqlite::" in s),
    ("redis client (redis, combine)", lambda d, s: "redis::" in s or "combine::" in s),
    ("allocator (glibc malloc/free)", lambda d, s: "libc" in d and any(
        k in s for k in ("malloc", "free", "realloc", "calloc", "tcache", "_int_"))),
    ("libc: memcpy, memcmp and the rest", lambda d, s: "libc" in d),
    ("tokio (runtime, timers, I/O)", lambda d, s: "tokio::" in s or "mio::" in s),
    ("h2 (HTTP/2)", lambda d, s: "h2::" in s or "hpack" in s),
    ("hyper, tonic, tower, http", lambda d, s: any(
        k in s for k in ("hyper::", "hyper_util::", "tonic::", "tower::", "http::",
                         "http_body", "tonic_")),),
    ("prost", lambda d, s: "prost::" in s),
    ("metrics", lambda d, s: "metrics" in s or "quanta::" in s),
    ("Tern", lambda d, s: "tern::" in s),
    ("Rust std, core, alloc, bytes", lambda d, s: any(
        k in s for k in ("std::", "core::", "alloc::", "bytes::", "__rust", "hashbrown::"))),
]


def samples(path):
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "--stdio",
         "-q", "-F", "overhead,dso,sym", "--percent-limit", "0"],
        capture_output=True, text=True, check=True).stdout
    totals = collections.Counter()
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[0].endswith("%"):
            continue
        share = float(parts[0].rstrip("%"))
        dso, rest = parts[1], parts[2]
        sym = rest.split("] ", 1)[1] if "] " in rest else rest
        name = next((c for c, test in COMPONENTS if test(dso, sym.strip())), "other")
        totals[name] += share
    return totals


def main():
    runs = []
    for arg in sys.argv[1:]:
        path, cpu = arg.rsplit(":", 1)
        runs.append((path.rsplit("/", 1)[-1].removesuffix(".data"), samples(path), float(cpu)))
    names = [c for c, _ in COMPONENTS] + ["other"]
    print("| component | " + " | ".join(f"{label} (µs, %)" for label, _, _ in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for name in names:
        cells = [f"{t[name] / 100 * cpu:.1f} ({t[name]:.0f}%)" for _, t, cpu in runs]
        if any(t[name] >= 0.5 for _, t, _ in runs):
            print(f"| {name} | " + " | ".join(cells) + " |")
    print("| total | " + " | ".join(f"{cpu:.1f}" for _, _, cpu in runs) + " |")


if __name__ == "__main__":
    main()
