"""The one reader, writer and validator of the quantized model file (docs/format.md).

The exporter writes through `write`; the engine reads through `read`.  Both sides use
`pack_codes`/`unpack_codes` for the bit order.  Torch-free, float-free except for the
scales that are kept for printing.
"""
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

MAGIC = b"LBPTQINT"
VERSION = 3                          # what `write` writes
READS = (2, 3)                       # what `read` reads: version 2 through upgrade_v2
DIGEST_KEY = "content_sha256"        # header key holding the digest of the content (format.md)
MAX_FILE_BYTES = 64 << 20            # the shipped files are 75-550 KB
MAX_MEMBER_BYTES = 32 << 20          # uncompressed, checked before anything is read

# name -> allowed dtypes, in the order they are written (docs/format.md, "Members")
MEMBERS = {
    "magic": (np.uint8,), "version": (np.int32,), "header": (np.uint8,),
    "weights": (np.uint8,), "codebook": (np.int16,),
    "bias": (np.int32, np.int64), "multiplier": (np.int32,), "shift": (np.int8,),
    "add_factor": (np.int64,), "weight_scale": (np.float32,),
    "lut": (np.int32,), "act_zero_point": (np.int32,), "act_bits": (np.int8,),
    "act_scale": (np.float64,),
}
WEIGHT_BITS = (2, 4, 8, 16)
ACT_BITS = (2, 4, 8, 16)


class FormatError(Exception):
    """The file is not a valid quantized model; the message says what and what to do."""


def pack_codes(codes, bits):
    """Unsigned codes (any shape, values < 2^bits) -> uint8 bytes, format.md "Packing".

    2 and 4 bits: element i goes to byte i*bits//8, at bit (i*bits) % 8 (first element in
    the low bits).  8 and 16 bits: the codes are the two's-complement bytes, little-endian.
    """
    codes = np.asarray(codes).reshape(-1)
    if bits in (8, 16):
        dtype = np.int8 if bits == 8 else np.dtype("<i2")
        return np.frombuffer(codes.astype(dtype).tobytes(), np.uint8).copy()
    per = 8 // bits
    c = np.zeros(-(-codes.size // per) * per, np.uint8)
    c[:codes.size] = codes
    c = c.reshape(-1, per)
    out = np.zeros(len(c), np.uint8)
    for j in range(per):
        out |= (c[:, j] << (bits * j)).astype(np.uint8)
    return out


def unpack_codes(packed, bits, count):
    """Inverse of pack_codes: uint8 bytes -> `count` codes (int64; signed at 8/16 bits)."""
    packed = np.asarray(packed, np.uint8)
    if bits in (8, 16):
        dtype = np.int8 if bits == 8 else np.dtype("<i2")
        return np.frombuffer(packed.tobytes(), dtype)[:count].astype(np.int64)
    per = 8 // bits
    mask = (1 << bits) - 1
    codes = np.stack([(packed >> (bits * j)) & mask for j in range(per)], axis=1).reshape(-1)
    return codes[:count].astype(np.int64)


def packed_nbytes(count, bits):
    return -(-count * bits // 8)


def canonical_json(obj):
    """The header's bytes: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def content_digest(header, arrays):
    """sha256 (hex) of the file's content, format.md "Digest": the header without its digest
    key, then every other member in MEMBERS order as `name dtype shape` and its bytes."""
    h = hashlib.sha256(b"header\n" + canonical_json({k: v for k, v in header.items() if k != DIGEST_KEY}))
    for name in MEMBERS:
        if name != "header":
            a = np.ascontiguousarray(arrays[name])
            h.update(f"\n{name} {a.dtype.str} {','.join(map(str, a.shape))}\n".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _remove_stale_temporaries(path):
    """Temporary files of writers that were killed (their pid is gone) are deleted."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            pid = int(tmp.name[len(path.name) + 2:-4])
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, OSError):
            pass


def write(path, header, arrays):
    """Write atomically (temporary file, fsync, then os.replace), byte-identical for equal
    input, with the content digest in the header.  The only writer of model files."""
    path = Path(path)
    members = {"magic": np.frombuffer(MAGIC, np.uint8), "version": np.array(VERSION, np.int32), **arrays}
    header = json.loads(canonical_json({k: v for k, v in header.items() if k != DIGEST_KEY}))
    header[DIGEST_KEY] = content_digest(header, members)
    members["header"] = np.frombuffer(canonical_json(header), np.uint8)
    if set(members) != set(MEMBERS):
        raise ValueError(f"members {sorted(set(members) ^ set(MEMBERS))} missing or unknown")
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Test hook (tests/test_reliability.py): pause this many seconds after half the members,
    # so a test can kill the process while the temporary file is half written.
    pause = float(os.environ.get("LOWBIT_PTQ_TEST_PAUSE_WRITE", "0") or 0)
    try:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as z:
                for k, name in enumerate(MEMBERS):
                    a = np.asarray(members[name], order="C")
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, a, allow_pickle=False)
                    info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    z.writestr(info, buf.getvalue())
                    if pause and k == len(MEMBERS) // 2:
                        fh.flush()
                        print(f"paused writing {tmp}", file=sys.stderr, flush=True)
                        time.sleep(pause)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# What a file that is not a model file is, for errors that say so (also used by the
# trainer and the exporter when they are given a model file).
FILE_TYPES = {
    "missing": "there is no such file", "folder": "it is a folder", "empty": "it is an empty file",
    "text": "it is a text file", "pickle": "it is a Python pickle (such as an old-format PyTorch checkpoint)",
    "pytorch": "it is a PyTorch checkpoint", "model": "it is an integer model file written by the exporter",
    "truncated-zip": "it is a truncated or damaged zip archive (its directory is missing)",
    "zip": "it is a zip archive of unknown content", "other": "it is a binary file of unknown type",
}


def sniff(path):
    """The type of file at `path`, one of FILE_TYPES, from its first bytes and its zip names."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.is_file():
        return "missing"
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return "truncated-zip"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "pytorch"
        return "model" if {"magic.npy", "header.npy"} <= set(names) else "zip"
    if head[:2] == b"PK":
        return "truncated-zip"
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    try:
        text = head.decode("utf-8")
        if "\0" not in text and all(c.isprintable() or c.isspace() for c in text):
            return "text"
    except UnicodeDecodeError:
        pass
    return "other"


def regenerate(path, bits="B"):
    """The hint that ends most errors: the command that writes this file again."""
    return f"regenerate it with `python -m exporter --bits {bits} --out {path}`"


def _bits(arrays):
    """The weight bits recorded in the header's meta, for the regeneration hint, else 'B'."""
    try:
        meta = json.loads(arrays["header"].tobytes().decode()).get("meta", {})
        return meta["bits"] if meta.get("bits") in WEIGHT_BITS else "B"
    except Exception:  # a damaged header: the hint stays generic
        return "B"


def _zip_members(path):
    """name -> raw .npy bytes of each member, after checking names and declared sizes."""
    if path.is_dir():
        raise FormatError(f"{path} is a folder, not a model file")
    if not path.is_file():
        raise FormatError(f"no such file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FormatError(f"{path}: {size:,} bytes, larger than any model file "
                          f"({MAX_FILE_BYTES:,} at most); not a model file written by the exporter")
    kind = sniff(path)
    if kind == "pytorch":
        raise FormatError(f"{path} is a PyTorch checkpoint, not an integer model file; export it "
                          f"first: `python -m exporter --bits 4 --checkpoint {path}`")
    if kind == "truncated-zip":
        raise FormatError(f"{path}: {FILE_TYPES[kind]}; {regenerate(path)}")
    if kind not in ("model", "zip"):
        raise FormatError(f"{path}: {FILE_TYPES[kind]}, not a model file written by the exporter "
                          f"(`python -m exporter --bits B --out FILE` writes one)")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if len(names) > 2 * len(MEMBERS):
                raise FormatError(f"{path}: {len(names):,} members, a model file has {len(MEMBERS)}; "
                                  f"not a model file written by the exporter")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise FormatError(f"{path}: members {dup} appear more than once; {regenerate(path)}")
            missing = [k for k in MEMBERS if k + ".npy" not in names]
            if missing:
                raise FormatError(f"{path}: missing arrays {missing}; not a model file written "
                                  f"by the exporter; {regenerate(path)}")
            extra = sorted(set(names) - {k + ".npy" for k in MEMBERS})
            if extra:
                raise FormatError(f"{path}: unexpected members {extra[:5]}; not a model file "
                                  f"written by the exporter; {regenerate(path)}")
            if sum(i.file_size for i in infos) > MAX_FILE_BYTES:
                raise FormatError(f"{path}: members declare {sum(i.file_size for i in infos):,} bytes "
                                  f"uncompressed (at most {MAX_FILE_BYTES:,}); {regenerate(path)}")
            for i in infos:
                if i.flag_bits & 0x1 or i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise FormatError(f"{path}: member {i.filename!r} is encrypted or uses compression "
                                      f"method {i.compress_type}; the exporter writes deflate only")
                if i.file_size > MAX_MEMBER_BYTES:           # checked before anything is inflated
                    raise FormatError(f"{path}: member {i.filename!r} declares {i.file_size:,} bytes "
                                      f"uncompressed (at most {MAX_MEMBER_BYTES:,}); damaged or "
                                      f"not a model file; {regenerate(path)}")
            raw = {}
            for i in infos:
                with z.open(i) as f:             # never inflates past the declared size
                    data = f.read(i.file_size + 1)
                if len(data) != i.file_size:
                    raise FormatError(f"{path}: member {i.filename!r} holds {len(data):,} bytes, "
                                      f"declared {i.file_size:,}; damaged; {regenerate(path)}")
                raw[i.filename[:-4]] = data
            return raw
    except FormatError:
        raise
    except Exception as e:  # zipfile, zlib and EOF errors: a damaged or truncated archive
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(f"{path} is damaged or truncated ({type(e).__name__}: {msg}); "
                          f"{regenerate(path)}") from None


def _array(path, name, data):
    """One member's .npy bytes -> array, with the declared shape checked against the bytes
    before anything is allocated.  Never unpickles (allow_pickle=False)."""
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fp)
    except Exception as e:  # numpy raises ValueError, SyntaxError, ... for a bad header
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(f"{path}: member {name!r} has no valid .npy header ({msg}); "
                          f"{regenerate(path)}") from None
    if dtype.hasobject:
        raise FormatError(f"{path}: member {name!r} is an object array, which would need pickle "
                          f"to load; refused (model files hold numbers only)")
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    if any(d < 0 for d in shape) or nbytes != len(data) - fp.tell():
        raise FormatError(f"{path}: member {name!r} declares shape {shape} ({nbytes:,} bytes) "
                          f"but holds {len(data) - fp.tell():,} bytes; damaged; {regenerate(path)}")
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def read(path):
    """Load, check structure and dtypes, and recompute the content digest.

    Returns (header dict, arrays dict).  Semantic checks (shapes that chain, value ranges)
    are in `intengine.validate`.  Raises FormatError with a one-line message.
    """
    path = Path(path)
    arrays = {k: _array(path, k, v) for k, v in _zip_members(path).items()}
    if arrays["magic"].dtype != np.uint8 or arrays["magic"].tobytes() != MAGIC:
        raise FormatError(f"{path}: wrong magic, this is not a lowbit-ptq model file; {regenerate(path)}")
    v = arrays["version"]
    version = int(v) if v.shape == () and v.dtype == np.int32 else None
    if version == 1:
        raise FormatError(f"{path}: format version 1 has no content digest and is no longer read; "
                          f"{regenerate(path, _bits(arrays))}")
    if version not in READS:
        raise FormatError(f"{path}: format version {version if version is not None else v.dtype.name + str(v.shape)}, "
                          f"this engine reads versions {', '.join(map(str, READS))}; {regenerate(path)}")
    for name, dtypes in MEMBERS.items():
        a = arrays[name]
        if a.dtype not in [np.dtype(d) for d in dtypes]:
            raise FormatError(f"{path}: array {name!r} has dtype {a.dtype}, expected "
                              f"{' or '.join(np.dtype(d).name for d in dtypes)}; {regenerate(path)}")
    try:
        header = json.loads(arrays["header"].tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(f"{path}: header is not valid JSON ({msg}); {regenerate(path)}") from None
    if not isinstance(header, dict) or not isinstance(header.get("ops"), list) \
            or not isinstance(header.get("points"), list):
        raise FormatError(f"{path}: header lacks the 'ops' and 'points' lists; {regenerate(path)}")
    digest = header.get(DIGEST_KEY)
    if not isinstance(digest, str) or digest != content_digest(header, arrays):
        raise FormatError(f"{path}: content does not match its sha256 digest, so the file was "
                          f"modified or damaged after export; {regenerate(path, _bits(arrays))}")
    if version == 2:
        upgrade_v2(header, arrays)
    return header, arrays


# Version 2's ops in version 3's terms (docs/format.md "Versions"): every conv was 3x3 with
# padding 1 and one group, the global pool was `pool`, and `relu` stood for the clamp
# [z_y, 2^b - 1] (else [0, 2^b - 1]) of the op's output point.
V2_CONV = {"kh": 3, "kw": 3, "ph": 1, "pw": 1, "groups": 1}


def upgrade_v2(header, arrays):
    """Rewrite a version-2 header's ops in place as version 3 writes them (after the digest
    check, which covers the file as written).  Fields the engine then rejects stay rejected:
    a malformed op is left as it is for validate.py to name."""
    zp, bits = arrays["act_zero_point"], arrays["act_bits"]
    for op in header["ops"]:
        if not isinstance(op, dict):
            continue
        if op.get("op") == "pool":
            op["op"] = "gap"
        if op.get("op") == "conv":
            for k, v in V2_CONV.items():
                op.setdefault(k, v)
        out = op.get("out")
        if op.get("op") in ("conv", "linear", "add", "requant", "gap") and isinstance(out, int) \
                and not isinstance(out, bool) and 0 <= out < len(zp):
            relu = op.get("relu", False)
            if isinstance(relu, bool):           # else validate.py names the missing clamp
                op.pop("relu", None)
                op.setdefault("lo", int(zp[out]) if relu else 0)
                op.setdefault("hi", (1 << int(bits[out])) - 1)
