"""The structure the exporter finds in a float graph (exporter/capture.py): the first and last
weighted layers, the split of the residual stream below 8-bit activations, and the units that
block reconstruction learns one at a time (docs/quantization.md sections 3 and 13)."""
from .ops import CONVERTERS

WEIGHTED = tuple(k for k, m in CONVERTERS.items() if m.WEIGHTED)      # conv, linear


def first_last(ops):
    """The names of the first and the last weighted layer (the stem and the fc): the layers
    `--first-last-bits` sets and reconstruction treats as units of their own.  The one place
    that picks them."""
    weighted = [op["name"] for op in ops if op["op"] in WEIGHTED]
    return weighted[0], weighted[-1]


def split_stream(points, ops):
    """Below 8-bit activations (docs/quantization.md section 3): a `requant` op in front of
    every conv that reads a point the residual add also reads, so that the conv reads its own
    low-bit copy while the residual stream keeps 8 bits.  -> (points, ops), renumbered in op
    order; `layerS.B.in` is the new point of block layerS.B (`<conv>.in` where two convs of
    one module each get one, so every name stays unique)."""
    readers = {}
    for op in ops:
        for i in _inputs(op):
            readers.setdefault(i, set()).add(op["op"])
    new_pts, where, out = [points[0]], {0: 0}, []
    taken = {op["name"] for op in ops}
    for op in ops:
        op = dict(op)
        if op["op"] == "conv" and op["in"] != 0 and "add" in readers[op["in"]]:
            block = op["name"].rsplit(".", 1)[0]
            if f"{block}.requant" in taken:
                block = op["name"]
            taken.add(f"{block}.requant")
            new_pts.append({"name": f"{block}.in", "shape": list(points[op["in"]]["shape"])})
            out.append({"op": "requant", "name": f"{block}.requant", "in": where[op["in"]],
                        "out": len(new_pts) - 1})
            op["in"] = len(new_pts) - 1
        else:
            op["in"] = [where[i] for i in op["in"]] if isinstance(op["in"], list) else where[op["in"]]
        new_pts.append(points[op["out"]])
        where[op["out"]] = len(new_pts) - 1
        op["out"] = len(new_pts) - 1
        out.append(op)
    return new_pts, out


def _inputs(op):
    return op["in"] if isinstance(op["in"], list) else [op["in"]]


def exits(ops):
    """The op indices k after which only op k's output is still to be read: the graph's
    single-exit points, where a unit can end without cutting a residual path."""
    last = {}
    for k, op in enumerate(ops):
        for i in _inputs(op):
            last[i] = k
    live, out = {0}, set()
    for k, op in enumerate(ops):
        live = {p for p in live | {op["out"]} if last.get(p, -1) > k}
        if live <= {op["out"]}:
            out.add(k)
    return out


def _ends_block(op):
    """An add, or an op whose output nothing clamps (a linear bottleneck, a pool, a flatten)."""
    return op["op"] == "add" or not op.get("relu")


def units(ops, method):
    """The graph cut into the lists of ops that reconstruction learns one at a time.

    adaround: each weighted layer (with the ops before it).  brecq: blocks found from the
    graph, cut only at single-exit points (exits): the stem and the head alone; a residual
    block up to its add; an inverted residual up to its linear bottleneck (a clamped layer
    whose next one or two layers end unclamped stays with them); and in a plain chain of
    clamped layers, one layer each."""
    edge = set(first_last(ops))
    groups, cur = [], []
    if method == "adaround":
        for op in ops:
            cur.append(op)
            if op["op"] in WEIGHTED or op["op"] == "add":
                groups.append(cur)
                cur = []
        return groups + [cur] if cur else groups
    cut = exits(ops)

    def bottleneck_ahead(k):
        layers = 0
        for j in range(k + 1, len(ops)):
            if ops[j]["name"] in edge:
                return False
            layers += ops[j]["op"] in WEIGHTED
            if layers > 2:
                return False
            if j in cut and _ends_block(ops[j]) and (ops[j]["op"] in WEIGHTED or ops[j]["op"] == "add"):
                return True
        return False

    for k, op in enumerate(ops):
        cur.append(op)
        if k not in cut or not any(o["op"] in WEIGHTED for o in cur):
            continue
        nxt = next((o for o in ops[k + 1:] if o["op"] in WEIGHTED), None)
        if op["name"] in edge or (nxt is not None and nxt["name"] in edge) or _ends_block(op) \
                or not bottleneck_ahead(k):
            groups.append(cur)
            cur = []
    return groups + [cur] if cur else groups


def unit_name(unit):
    """A unit's name: its ops' common dotted prefix (layer1.0), else its last op's name."""
    parts = [op["name"].split(".") for op in unit]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common) if common and len(unit) > 1 else unit[-1]["name"]
