"""Three atomics for splitting one image's ops over threads (docs/engine.md, "One image on
every thread"): fetch-and-add and load on an int64 array element, and the spin-wait hint.

    t = fetch_add(a, i, v)     old a[i], and a[i] += v, atomically (sequentially consistent)
    v = load(a, i)             a[i], atomically (acquire): a spin loop re-reads it every time
    pause()                    x86 PAUSE (llvm.x86.sse2.pause; nothing elsewhere): a polite spin

Sequentially consistent read-modify-writes and acquire loads order the plain stores and loads
around them, for the compiler and the processor alike: what a thread wrote before its
fetch_add is visible to a thread whose load saw the new value.  No bounds checks: callers
pass indices they made.  Written as LLVM IR through llvmlite, like vnni.py.
"""
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _pointer(context, builder, aryty, ary, index):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [index])


@intrinsic
def fetch_add(typingctx, a, i, v):
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1):
        return None
    sig = types.int64(a, types.intp, types.int64)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")
    return sig, codegen


@intrinsic
def load(typingctx, a, i):
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1):
        return None
    sig = types.int64(a, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)
    return sig, codegen


@intrinsic
def pause(typingctx):
    sig = types.void()

    def codegen(context, builder, signature, args):
        if X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return sig, codegen

