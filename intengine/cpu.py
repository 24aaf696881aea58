"""Which conv kernel runs a file: the dispatch rule, decided when a model is loaded.

    amx       weights <= 8 bits, activations <= 8 bits, a processor with AMX-INT8 (Intel Xeon
              from Sapphire Rapids on) whose Linux grants the process the AMX tile state:
              tdpbusd on tiles (amx.py), vpdpbusd for what is not a conv tile
    vnni      weights <= 8 bits, activations <= 8 bits, and the processor has AVX512-VNNI
    avxvnni   the same sizes, a processor with 256-bit VNNI and no AVX512-VNNI (AVX-VNNI: Intel
              client chips from Alder Lake on): vpdpbusd on ymm
    avx2      the same sizes, a processor with AVX2 and no VNNI at all: 256-bit vpmaddubsw where
              the layer's weights allow it exactly, else vpmaddwd (vnni.py, per layer)
    portable  weights <= 8 bits, activations <= 8 bits, any processor (generic LLVM vectors)
    scalar    everything else (16-bit files): kernels.py, int32 or int64 accumulators

The processor's features come from LLVM (llvmlite reports the host's), at run time; nothing
is assumed.  INTENGINE_KERNEL=vnni, avxvnni, avx2, portable or scalar forces another path, for
comparison, to see what another processor runs, or to work around a problem; a path the
processor lacks is an error.  The avxvnni path also runs where AVX512-VNNI comes with AVX512VL
(vpdpbusd on ymm, EVEX-encoded, same sums), so every VNNI machine tests it.  docs/engine.md.
"""
import os

import llvmlite.binding as llvm
from numba.core import config

KERNELS = ("amx", "vnni", "avxvnni", "avx2", "portable", "scalar")
ENV = "INTENGINE_KERNEL"


def host_features():
    """{feature: bool} of this processor, as LLVM sees it (e.g. 'avx512vnni', 'amx-int8')."""
    return {k: bool(v) for k, v in llvm.get_host_cpu_features().items()}


def has_vnni():
    """True when Numba compiles for this host and the host has AVX512-VNNI (vpdpbusd on zmm).

    A NUMBA_CPU_NAME / NUMBA_CPU_FEATURES override (e.g. for portable caches) means Numba
    may not target this host, so the VNNI instruction is not emitted then."""
    if config.CPU_NAME not in (None, "host") or config.CPU_FEATURES:
        return False
    f = host_features()
    return f.get("avx512vnni", False) and f.get("avx512bw", False)


HAS_VNNI = has_vnni()
ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, SYS_ARCH_PRCTL = 0x1023, 18, 158     # Linux x86-64


def has_amx():
    """True when Numba compiles for this host, the host has AMX-INT8 and AVX512-VNNI, and
    Linux grants this process the AMX tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, asked
    once here: without it the first tile instruction faults).  Any failure means no AMX."""
    if not HAS_VNNI:
        return False
    f = host_features()
    if not (f.get("amx-int8", False) and f.get("amx-tile", False)):
        return False
    try:
        import ctypes
        import platform
        if platform.system() != "Linux" or platform.machine() != "x86_64":
            return False
        return ctypes.CDLL(None, use_errno=True).syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM,
                                                         XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


HAS_AMX = has_amx()
# LLVM's names of processors with AVX2, for a NUMBA_CPU_NAME that is not the host
AVX2_CPUS = {"haswell", "broadwell", "skylake", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake",
             "icelake-client", "icelake-server", "tigerlake", "rocketlake", "alderlake", "raptorlake",
             "meteorlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver1", "znver2", "znver3",
             "znver4", "znver5", "x86-64-v3", "x86-64-v4"}


def has_avx2():
    """True when the host has AVX2 and Numba compiles for a processor with it: the host, or a
    NUMBA_CPU_NAME of that family (say haswell, to see what an AVX2-only processor runs)."""
    if not host_features().get("avx2", False):
        return False
    if config.CPU_FEATURES:
        return "+avx2" in config.CPU_FEATURES
    return config.CPU_NAME in (None, "host") or config.CPU_NAME in AVX2_CPUS


HAS_AVX2 = has_avx2()
# LLVM's names of processors with 256-bit vpdpbusd: AVX-VNNI alone (VEX; Intel client chips) ...
AVXVNNI_ONLY_CPUS = {"alderlake", "raptorlake", "meteorlake", "arrowlake", "arrowlake-s", "lunarlake",
                     "pantherlake", "gracemont", "sierraforest", "grandridge", "clearwaterforest"}
# ... and AVX512-VNNI with AVX512VL (EVEX)
AVX512VNNI_CPUS = {"cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake", "rocketlake",
                   "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids",
                   "znver4", "znver5", "x86-64-v4"}


def has_avxvnni():
    """True when the host runs vpdpbusd on ymm (AVX-VNNI, or AVX512-VNNI with AVX512VL) and
    Numba compiles for a processor that has it: the host, or a NUMBA_CPU_NAME such as alderlake
    (AVX-VNNI without AVX-512: what an Intel client chip runs, VEX-encoded)."""
    f = host_features()
    vex, evex = f.get("avxvnni", False), f.get("avx512vnni", False) and f.get("avx512vl", False)
    if config.CPU_FEATURES:
        want = set(config.CPU_FEATURES.split(","))
        return (vex and "+avxvnni" in want) or (evex and {"+avx512vnni", "+avx512vl"} <= want)
    if config.CPU_NAME in (None, "host"):
        return vex or evex
    return (vex and config.CPU_NAME in AVXVNNI_ONLY_CPUS) or (evex and config.CPU_NAME in AVX512VNNI_CPUS)


HAS_AVXVNNI = has_avxvnni()


# what limited_features turns off, for each instruction set it emulates
LIMITED_OFF = {"avx2": "AVX-512, AMX and AVX-VNNI", "avxvnni": "AVX-512 and AMX"}


def limited_features(isa):
    """NUMBA_CPU_FEATURES that compile, on this host, what a processor with only `isa` runs:
    the host's own features less LIMITED_OFF[isa].  NUMBA_CPU_NAME alone is not enough: Numba keeps the host's
    features, so LLVM would still use zmm and ymm16-31 around the intrinsics."""
    vnni256 = ("avxvnni", "avxvnniint8", "avxvnniint16", "avxifma", "avxneconvert")

    def off(k):
        return k.startswith(("avx512", "amx", "avx10", "evex512")) or (isa == "avx2" and k in vnni256)
    return ",".join(("+" if v and not off(k) else "-") + k for k, v in sorted(host_features().items()))


def fast_kernels():
    """The fast paths this processor runs, fastest first (what the tests run each of)."""
    return ["amx"] * HAS_AMX + ["vnni"] * HAS_VNNI + ["avxvnni"] * HAS_AVXVNNI + ["avx2"] * HAS_AVX2 + ["portable"]


def llvm_cpu_name():
    """LLVM's name for the host processor (e.g. 'znver4'), what the JIT compiles for."""
    return llvm.get_host_cpu_name()


def processor_name():
    """The processor's model name from /proc/cpuinfo (e.g. 'AMD EPYC'), else the platform's."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose(eligible, requested=None):
    """The kernel for a file: `requested` (or $INTENGINE_KERNEL, or 'auto') and the rule above.

    eligible: whether the file has weights and activations of <= 8 bits (graph.eligible)."""
    req = (requested or os.environ.get(ENV) or "auto").strip().lower()
    if req not in ("auto",) + KERNELS:
        raise ValueError(f"{ENV}={req!r}: expected auto, amx, vnni, avxvnni, avx2, portable or scalar")
    if req == "scalar" or not eligible:
        return "scalar"
    if req == "amx" and not HAS_AMX:
        raise ValueError(f"kernel 'amx' requested but this processor ({llvm_cpu_name()}) has no AMX-INT8, or "
                         f"Linux did not grant the AMX state; use auto or vnni")
    if req == "vnni" and not HAS_VNNI:
        raise ValueError(f"kernel 'vnni' requested but this processor ({llvm_cpu_name()}) has no "
                         f"AVX512-VNNI; use auto or portable")
    if req == "avxvnni" and not HAS_AVXVNNI:
        raise ValueError(f"kernel 'avxvnni' requested but this processor ({llvm_cpu_name()}) has no AVX-VNNI, or "
                         f"Numba does not compile for one; use auto or portable")
    if req == "avx2" and not HAS_AVX2:
        raise ValueError(f"kernel 'avx2' requested but this processor ({llvm_cpu_name()}) has no AVX2, or "
                         f"Numba does not compile for one; use auto or portable")
    if req in ("portable", "avx2", "avxvnni", "vnni"):
        return req
    return "amx" if HAS_AMX else "vnni" if HAS_VNNI else "avxvnni" if HAS_AVXVNNI else "avx2" if HAS_AVX2 else "portable"
