"""A random permutation of ``0 .. n-1`` that is computed, not stored: ``P(k)`` and its inverse for
any positions ``k``, in O(1) memory, so a table of 10^8 rows can be shuffled, split and batched
without an index of 10^8 integers (800 MB).

The permutation is a Feistel network on the smallest even number of bits that holds ``n``, with
cycle walking (a value that lands at or past ``n`` is enciphered again until it does not), the
standard way to get a bijection of an arbitrary range from one of a power of two (Black and
Rogaway, "Ciphers with arbitrary finite domains", 2002). It is a pseudo-random permutation for
shuffling, not for cryptography.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Feistel rounds; 4 rounds of a good round function make a pseudo-random permutation
ROUNDS = 6
_MASK64 = np.uint64(2**64 - 1)


def _mix(x: NDArray) -> NDArray:
    """SplitMix64's finaliser: a bijection of uint64 whose every output bit depends on every
    input bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class Permutation:
    """A permutation of ``0 .. n-1`` drawn from ``seed``: ``perm(k)`` is where position ``k`` goes,
    ``perm.inverse(i)`` the position that goes to ``i``.

    Examples:
        >>> perm = Permutation(10, seed=0)
        >>> sorted(perm(np.arange(10)).tolist()) == list(range(10))
        True
        >>> k = np.array([3, 7]); bool((perm.inverse(perm(k)) == k).all())
        True
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        self.n = n
        self.half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)  # 2 * half bits hold n - 1
        base = np.uint64(seed % 2**64)
        self.keys = _mix(base + np.arange(1, ROUNDS + 1, dtype=np.uint64) * np.uint64(0x9E37))

    def _round(self, right: NDArray, r: int) -> NDArray:
        low = np.uint64(2**self.half - 1)
        return _mix(right ^ self.keys[r]) & low

    def _encipher(self, x: NDArray) -> NDArray:
        h = np.uint64(self.half)
        left, right = x >> h, x & np.uint64(2**self.half - 1)
        for r in range(ROUNDS):
            left, right = right, left ^ self._round(right, r)
        return (left << h) | right

    def _decipher(self, x: NDArray) -> NDArray:
        h = np.uint64(self.half)
        left, right = x >> h, x & np.uint64(2**self.half - 1)
        for r in reversed(range(ROUNDS)):
            left, right = right ^ self._round(left, r), left
        return (left << h) | right

    def _walk(self, k: NDArray, step) -> NDArray:
        """Apply ``step`` to every value until it is below n (the cycle walk); (M,) int64."""
        k = np.asarray(k, dtype=np.int64)
        if k.size and (k.min() < 0 or k.max() >= self.n):
            raise IndexError(f"positions must be in [0, {self.n}), got {k.min()} .. {k.max()}")
        out = step(k.astype(np.uint64))
        outside = out >= np.uint64(self.n)
        while outside.any():
            out[outside] = step(out[outside])
            outside = out >= np.uint64(self.n)
        return out.astype(np.int64)

    def __call__(self, k: NDArray) -> NDArray:
        """Where positions ``k`` go: (M,) int64 in ``0 .. n-1``."""
        return self._walk(k, self._encipher)

    def inverse(self, i: NDArray) -> NDArray:
        """The positions that go to ``i``: ``perm.inverse(perm(k)) == k``."""
        return self._walk(i, self._decipher)
