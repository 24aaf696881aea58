"""The one reader, writer and validator of the quantized model file (docs/format.md).

The exporter writes through `write`; the engine reads through `read`.  Both sides use
`pack_codes`/`unpack_codes` for the bit order.  Torch-free, float-free except for the
scales that are kept for printing.
"""
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

MAGIC = b"LBPTQINT"
VERSION = 1
REGENERATE = "re-export it with `python -m exporter --bits B`"

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
ACT_BITS = (8, 16)


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


def write(path, header, arrays):
    """Write atomically (temporary file, then os.replace), byte-identical for equal input."""
    path = Path(path)
    members = {"magic": np.frombuffer(MAGIC, np.uint8), "version": np.array(VERSION, np.int32),
               "header": np.frombuffer(json.dumps(header, sort_keys=True, separators=(",", ":"))
                                       .encode(), np.uint8), **arrays}
    if set(members) != set(MEMBERS):
        raise ValueError(f"members {sorted(set(members) ^ set(MEMBERS))} missing or unknown")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name in MEMBERS:
                a = np.asarray(members[name], order="C")
                buf = io.BytesIO()
                np.lib.format.write_array(buf, a, allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                z.writestr(info, buf.getvalue())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read(path):
    """Load with allow_pickle=False and check presence, dtypes and the header's structure.

    Returns (header dict, arrays dict).  Semantic checks (shapes that chain, value ranges)
    are in `intengine.validate`.  Raises FormatError with a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            names = set(f.files)
            missing = [k for k in MEMBERS if k not in names]
            if missing:
                raise FormatError(f"{path}: missing arrays {missing}; not a quantized model "
                                  f"file, {REGENERATE}")
            arrays = {k: f[k] for k in MEMBERS}
    except FormatError:
        raise
    except Exception as e:  # zip, npy-header and EOF errors all mean "unreadable"
        raise FormatError(f"{path} is not a readable .npz ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'truncated?'}); {REGENERATE}") from None
    if arrays["magic"].dtype != np.uint8 or arrays["magic"].tobytes() != MAGIC:
        raise FormatError(f"{path}: wrong magic, this is not a lowbit-ptq model file; {REGENERATE}")
    for name, dtypes in MEMBERS.items():
        a = arrays[name]
        if a.dtype not in [np.dtype(d) for d in dtypes]:
            raise FormatError(f"{path}: array {name!r} has dtype {a.dtype}, expected "
                              f"{' or '.join(np.dtype(d).name for d in dtypes)}; {REGENERATE}")
    version = int(arrays["version"]) if arrays["version"].shape == () else -1
    if version != VERSION:
        raise FormatError(f"{path}: format version {version}, this engine reads version "
                          f"{VERSION}; {REGENERATE}")
    try:
        header = json.loads(arrays["header"].tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: header is not valid JSON ({e}); {REGENERATE}") from None
    if not isinstance(header, dict) or not isinstance(header.get("ops"), list) \
            or not isinstance(header.get("points"), list):
        raise FormatError(f"{path}: header lacks the 'ops' and 'points' lists; {REGENERATE}")
    return header, arrays
