"""Hardware-aligned channel counts: every pruned group keeps a multiple of ``round_to`` channels.

Why: runtimes run fast kernels only on aligned channel counts. ONNX Runtime's CPU provider converts a Conv
to its blocked NCHWc layout only when its input and output channels are multiples of the MLAS block size
(16 with AVX-512, 8 with AVX2; onnxruntime/core/optimizer/nchwc_transformer.cc); otherwise it falls back to
im2col + SGEMM, which for a pruned resnet18 is slower per MAC than the unpruned model (see README "MACs vs
latency"). NVIDIA's guidance for Tensor Cores: input and output channels multiples of 8 for fp16 and of 16 for
INT8 (cuDNN / "Convolutional Layers User's Guide"; Torch-Pruning's ``round_to``, ModelOpt's
``channel_divisor`` and TAO's ``-pg 8`` follow the same rule). Each target's default multiple is declared on
the target (pwdeploy.targets).
"""

from __future__ import annotations

import math

def group_multiple(initial: int, round_to: int, strict: bool) -> int:
    """The multiple one group keeps. Strict (an explicit --round-to): ``round_to`` everywhere. Otherwise (the
    target's default) a group narrower than 4x``round_to`` uses the largest power of two <= a quarter of its
    width, so small models (8-16-32 channel nets) can still reach their MACs target."""
    if strict or initial >= 4 * round_to:
        return round_to
    return max(1, 1 << max(0, (initial // 4).bit_length() - 1))


def aligned_floor(initial: int, max_layer_reduction: float, round_to: int) -> int:
    """Fewest channels a group may keep: the per-layer floor, rounded up to a multiple of ``round_to``."""
    floor = max(1, int(round(initial * (1 - max_layer_reduction))))
    return round_to * math.ceil(floor / round_to)


def round_removals(wanted: dict[str, int], current: dict[str, int], floors: dict[str, int],
                   multiples: dict[str, int]) -> dict[str, int]:
    """Channels to remove per group so that each touched group keeps a multiple of its ``multiples`` entry.

    ``wanted``: removals from the global ranking; ``current``: channels each group has now; ``floors``: the
    fewest it may keep (a multiple of the group's multiple). Counts round to the nearest legal value, then
    whole blocks go to the groups that lost most to rounding, so the step removes about what was asked; a
    step never rounds to nothing while something was asked for.
    """
    out: dict[str, int] = {}
    room: dict[str, int] = {}
    for name, k in wanted.items():
        c, n = current[name], multiples[name]
        misaligned = c % n
        most = c - floors[name]  # congruent to ``misaligned``: floors are multiples of n
        if k <= 0 or most < misaligned or most <= 0:
            continue
        out[name] = min(misaligned + max(0, round((k - misaligned) / n)) * n, most)
        room[name] = most - out[name]
    asked = sum(k for name, k in wanted.items() if name in out)
    # Largest deficit first: hand out whole blocks while that brings the total closer to what was asked.
    while True:
        open_ = {name: wanted[name] - out[name] for name in out if room[name] >= multiples[name]
                 and sum(out.values()) + multiples[name] / 2 < asked}
        if not open_:
            break
        name = max(open_, key=open_.get)
        out[name] += multiples[name]
        room[name] -= multiples[name]
    if out and not any(out.values()):
        name = max(out, key=lambda n: wanted[n])
        if room[name] >= multiples[name]:
            out[name] = multiples[name]
    return {name: k for name, k in out.items() if k > 0}
