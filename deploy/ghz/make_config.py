#!/usr/bin/env python3
"""Writes a ghz (https://ghz.sh) config file that loads Tern's GetOnlineFeatures.

The request data is GetOnlineFeaturesRequest in the proto3 JSON mapping: a feature list and
columnar entities (join key -> {"val": [Value, ...]}, one Value per entity row). Entity values
are drawn at random, with a fixed seed, from the id sets given with --entity, so the same
command always writes the same file. With --requests K > 1 the data is an array of K
different requests; ghz sends them in turn (request i gets element i mod K).

Presets (--preset):
  example    examples/feature_repo (what `tern serve` serves in the README's first command):
             driver_stats' 6 features and 4 of customer_profile's, for the drivers and
             customers whose every one of those features is stored and non-null. This is
             the W1 request of benches/load.rs's example-repo comparison (driver 1001,
             customer c1) when run with --rows 1 and those two ids.
  synthetic  the synthetic repo benches/load.rs measures (view `bench`, features f0..f9,
             drivers 1..100000): the shape of BENCHMARKS.md's "1 x 10" and "100 x 10" rows.

--features and --entity override the preset, for your own repo. Python 3 standard library
only. Example:

  python3 deploy/ghz/make_config.py --rows 100 --requests 8 --path feature-server \\
      --rps 500 --duration 30s -o /tmp/w100.json
"""

import argparse
import json
import random
import shlex
import sys

CALLS = {
    # ghz's "package.Service.Method"; resolved over server reflection, or from --proto.
    "serving": "feast.serving.ServingService.GetOnlineFeatures",
    # `feast listen`'s service is declared without a package: its path is
    # /GrpcFeatureServer/GetOnlineFeatures.
    "feature-server": "GrpcFeatureServer.GetOnlineFeatures",
}

PRESETS = {
    "example": {
        "features": [
            "driver_stats:conv_rate",
            "driver_stats:acc_rate",
            "driver_stats:avg_daily_trips",
            "driver_stats:name",
            "driver_stats:active",
            "driver_stats:ratings",
            "customer_profile:tier",
            "customer_profile:lifetime_value",
            "customer_profile:age",
            "customer_profile:tags",
        ],
        # Left out: driver 1002 (null ratings), driver 1004 (written five days before the
        # others, so stale even at the data's own date) and customer c3 (every feature null).
        "entities": ["driver_id=int64:1001,1003,1005", "customer_id=string:c1,c2"],
    },
    "synthetic": {
        "features": ["bench:f%d" % i for i in range(10)],
        "entities": ["driver_id=int64:1-100000"],
    },
}

# proto3 JSON field of feast.types.Value for each entity type; 64-bit integers are strings.
VALUE_FIELDS = {"int64": "int64Val", "int32": "int32Val", "string": "stringVal"}
INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)


class EntitySet:
    """One join key and the values its rows are drawn from."""

    def __init__(self, spec):
        try:
            key, rest = spec.split("=", 1)
            kind, items = rest.split(":", 1)
        except ValueError:
            raise ValueError(
                "--entity %r: expected KEY=TYPE:VALUES, e.g. driver_id=int64:1001-1005" % spec
            )
        if not key:
            raise ValueError("--entity %r: empty join key" % spec)
        if kind not in VALUE_FIELDS:
            raise ValueError(
                "--entity %r: type must be one of %s" % (spec, ", ".join(sorted(VALUE_FIELDS)))
            )
        self.key, self.kind = key, kind
        self.field = VALUE_FIELDS[kind]
        parts = [p for p in items.split(",") if p != ""]
        if not parts:
            raise ValueError("--entity %r: no values" % spec)
        if kind == "string":
            self.strings = parts
            self.size = len(parts)
            return
        # Integers: single values or inclusive ranges LO-HI, drawn without expanding them.
        lo_limit, hi_limit = INT32_RANGE if kind == "int32" else INT64_RANGE
        self.ranges = []
        for part in parts:
            lo, sep, hi = part.partition("-")
            try:
                lo_v = int(lo)
                hi_v = int(hi) if sep else lo_v
            except ValueError:
                raise ValueError("--entity %r: %r is not an integer or LO-HI range" % (spec, part))
            if hi_v < lo_v:
                raise ValueError("--entity %r: empty range %r" % (spec, part))
            if lo_v < lo_limit or hi_v > hi_limit:
                raise ValueError("--entity %r: %r does not fit %s" % (spec, part, kind))
            self.ranges.append((lo_v, hi_v))
        self.size = sum(hi - lo + 1 for lo, hi in self.ranges)

    def draw(self, rng):
        """One proto3 JSON feast.types.Value."""
        i = rng.randrange(self.size)
        if self.kind == "string":
            return {self.field: self.strings[i]}
        for lo, hi in self.ranges:
            n = hi - lo + 1
            if i < n:
                v = lo + i
                return {self.field: str(v) if self.kind == "int64" else v}
            i -= n
        raise AssertionError("index within size")


def request(rng, features, entity_sets, rows):
    """One GetOnlineFeaturesRequest in the proto3 JSON mapping."""
    entities = {}
    for es in entity_sets:
        entities[es.key] = {"val": [es.draw(rng) for _ in range(rows)]}
    return {"features": {"val": list(features)}, "entities": entities}


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Write a ghz config for Tern's GetOnlineFeatures.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="example",
        help="features and ids to start from (default %(default)s; see below)",
    )
    p.add_argument(
        "--path", choices=sorted(CALLS), default="serving", help="which gRPC service to call"
    )
    p.add_argument("--rows", type=int, default=1, help="entity rows per request (default 1)")
    p.add_argument(
        "--requests",
        type=int,
        default=1,
        help="distinct requests; more than 1 writes `data` as an array ghz cycles through",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--features", help="comma-separated feature refs (default: the preset's)")
    p.add_argument(
        "--entity",
        action="append",
        metavar="KEY=TYPE:VALUES",
        help="join key and its values, TYPE one of int64, int32, string; VALUES a comma list, "
        "integers also as LO-HI ranges: driver_id=int64:1-100000, customer_id=string:c1,c2. "
        "Repeat for each key (default: the preset's)",
    )
    p.add_argument("--host", default="127.0.0.1:6566", help="server address (default %(default)s)")
    p.add_argument("--rps", type=int, default=1000, help="request rate cap (default %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--duration", default=None, help="run length, e.g. 30s (default 30s)")
    group.add_argument("--total", type=int, default=None, help="number of requests instead")
    p.add_argument(
        "--concurrency", type=int, default=50, help="ghz request workers (default %(default)s)"
    )
    p.add_argument(
        "--connections", type=int, default=4, help="HTTP/2 connections (default %(default)s)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="first requests left out of the figures (ghz skipFirst; default: one second's "
        "worth, --rps)",
    )
    p.add_argument("--name", default=None, help="run name shown in ghz's reports")
    p.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    args = p.parse_args(argv)
    for flag in ("rows", "requests", "rps", "concurrency", "connections"):
        if getattr(args, flag) < 1:
            p.error("--%s must be at least 1" % flag)
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must not be negative")
    if args.total is not None and args.total < 1:
        p.error("--total must be at least 1")
    if args.concurrency < args.connections:
        p.error("--concurrency must be at least --connections (ghz spreads workers over them)")
    return args


def build(args):
    preset = PRESETS[args.preset]
    features = (
        [f.strip() for f in args.features.split(",") if f.strip()]
        if args.features
        else preset["features"]
    )
    if not features:
        raise ValueError("--features: no feature refs")
    entity_sets = [EntitySet(s) for s in (args.entity or preset["entities"])]
    keys = [es.key for es in entity_sets]
    if len(set(keys)) != len(keys):
        raise ValueError("--entity: a join key is given twice")
    rng = random.Random(args.seed)
    data = [request(rng, features, entity_sets, args.rows) for _ in range(args.requests)]
    config = {
        "name": args.name
        or "tern %s %dx%d %s" % (args.preset, args.rows, len(features), args.path),
        "call": CALLS[args.path],
        "host": args.host,
        "insecure": True,
        "data": data[0] if len(data) == 1 else data,
        "load-schedule": "const",
        "rps": args.rps,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "skipFirst": args.rps if args.warmup is None else args.warmup,
    }
    if args.total is not None:
        config["total"] = args.total
    else:
        config["duration"] = args.duration or "30s"
    # How this file was made: ghz prints tags in its reports, and the kit's test regenerates
    # the shipped configs from them.
    config["tags"] = {"made_by": "make_config.py " + shlex.join(tag_args(args))}
    return config


def tag_args(args):
    """The options that decide this file's content, as command-line words."""
    words = ["--preset", args.preset, "--path", args.path, "--rows", str(args.rows)]
    words += ["--requests", str(args.requests), "--seed", str(args.seed)]
    if args.features:
        words += ["--features", args.features]
    for spec in args.entity or []:
        words += ["--entity", spec]
    words += ["--host", args.host, "--rps", str(args.rps)]
    if args.total is not None:
        words += ["--total", str(args.total)]
    else:
        words += ["--duration", args.duration or "30s"]
    words += ["--concurrency", str(args.concurrency), "--connections", str(args.connections)]
    if args.warmup is not None:
        words += ["--warmup", str(args.warmup)]
    if args.name:
        words += ["--name", args.name]
    return words


def render(config):
    """JSON with one top-level key per line and one request per line: small and diffable."""
    lines = []
    for key, value in config.items():
        if key == "data" and isinstance(value, list):
            items = ",\n".join("    " + json.dumps(v) for v in value)
            text = "[\n%s\n  ]" % items
        else:
            text = json.dumps(value)
        lines.append("  %s: %s" % (json.dumps(key), text))
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv):
    args = parse_args(argv)
    try:
        config = build(args)
    except ValueError as e:
        print("make_config.py: %s" % e, file=sys.stderr)
        return 2
    text = render(config)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
