"""The AMX path's tables (ops/conv.amx_tables, amx.tile_config), checked on every processor:
the chunks cover each kernel row's K-groups once, in order, the padding holds zero weights,
and a padded group reads no further than the arena's guard.  The sums themselves are tested
against the reference where the processor has AMX (test_fast_kernels.py, test_graphs.py)."""
import numpy as np
import pytest

from intengine import amx, layout
from intengine.ops import conv


@pytest.mark.parametrize("kh,kw,icp,cot", [(3, 3, 16, 1), (3, 3, 32, 2), (3, 3, 64, 4), (1, 1, 144, 3),
                                           (1, 1, 16, 1), (5, 5, 48, 2), (3, 3, 4, 1), (7, 1, 576, 1)])
def test_chunks_cover_each_kernel_row_once(kh, kw, icp, cot):
    rng = np.random.default_rng(kh * 1000 + icp)
    G = icp // 4
    L = kw * G                                              # K-groups a kernel row
    packed = rng.integers(-128, 128, size=(cot, kh * L, 16, 4))
    b = layout.Builder()
    row = b.row("conv", ROW=layout.CONV)
    rowstep, wo = 1000, 23
    conv.amx_tables(row, packed, kh, L, rowstep, wo, b)
    _, koffs, wpk, *_ = b.tables()
    f = {k: row[layout.FIELD[k]] for k in ("AMX_N", "AMX_R", "AMX_K", "AMX_W", "AMX_WSTEP", "AMX_TSTEP", "AMX_M",
                                           "AMX_CFG")}
    r, n = f["AMX_R"], f["AMX_N"]
    c = n // kh
    assert n == kh * c and 1 <= r <= 16 and c == -(-L // 16) and c * r >= L > (c - 1) * r
    assert (c * r - L) * 4 < layout.GUARD                  # the bytes a padded group reads past the row
    assert f["AMX_M"] == 16 and f["AMX_WSTEP"] == 64 * r and f["AMX_TSTEP"] == 64 * r * n
    for t in range(cot):
        for ky in range(kh):
            for i in range(c):
                k = ky * c + i
                assert koffs[f["AMX_K"] + k] == ky * rowstep + 4 * r * i
                at = f["AMX_W"] + t * f["AMX_TSTEP"] + k * f["AMX_WSTEP"]
                chunk = wpk[at:at + 64 * r].reshape(r, 16, 4).astype(np.int64)
                for g in range(r):
                    want = packed[t, ky * L + i * r + g] if i * r + g < L else np.zeros((16, 4))
                    assert np.array_equal(chunk[g], want), (t, ky, i, g)
    cfg = wpk[f["AMX_CFG"]:f["AMX_CFG"] + 64].view(np.uint8)
    assert cfg.tobytes() == amx.tile_config(16, r)


def test_tile_config_shapes():
    cfg = np.frombuffer(amx.tile_config(8, 12), np.uint8)
    colsb, rows = cfg[16:32].view(np.uint16), cfg[48:56]
    assert cfg[0] == 1 and not cfg[1:16].any() and not cfg[32:48].any() and not cfg[56:].any()
    assert list(rows) == [8] * 6 + [12] * 2                # C and A tiles: pixels; B tiles: K-groups
    assert list(colsb) == [64] * 4 + [48] * 2 + [64] * 2  # A rows: 4 bytes a K-group
