"""eq. (11) and (16a) in torch int64, written independently of intengine.fixedpoint, so that
the exact simulation (exporter/ops/*.exact) and the engine check each other (section 11)."""
import torch


def requant(acc, m0, n):
    """eq. (11) in torch int64, written independently of intengine.fixedpoint."""
    m0 = torch.as_tensor(m0, dtype=torch.int64)
    n = torch.as_tensor(n, dtype=torch.int64)
    hi, lo = acc >> 31, acc & ((1 << 31) - 1)
    big = n >= 32
    a = hi * m0 + torch.where(big, torch.ones_like(n) << (n - 32).clamp(min=0), torch.zeros_like(n))
    b = lo * m0 + torch.where(big, torch.zeros_like(n), torch.full_like(n, 1 << 30))
    return (a + (b >> 31)) >> (n - 31)


def requant_even(acc, m0, n):
    """eq. (16a): eq. (10), but an exact tie goes to the even integer."""
    n = torch.as_tensor(n, dtype=torch.int64)
    num = acc * torch.as_tensor(m0, dtype=torch.int64)           # < 2^62 for the pool's acc
    r = requant(acc, m0, n)
    tie = ((num + (torch.ones_like(n) << (n - 1))) & ((torch.ones_like(n) << n) - 1)) == 0
    return r - (tie & (r % 2 == 1)).long()
