"""How deep the skip FIFO of a branching network must be so that its fork never deadlocks.

A fork (templates/verilog/nnfpga_fork.sv.j2) copies one stream to two branches that rejoin
at an add (nnfpga_add) or a concat (nnfpga_concat). The join takes its inputs in a fixed
order, so a branch whose first output needs many inputs (the long branch, e.g. a dense
layer that collects a whole vector first) makes the join wait, while the other branch (the
short one, usually nothing but a FIFO) keeps receiving the fork's copies of the same beats.
The fork can only pass a beat on when both branches take it, so if the short branch fills
up before the long branch has what it needs, nothing moves again: a deadlock. The FIFO
directly behind the fork on the short branch must absorb the difference.

The model. Each module of a branch is a monotone function `needed(j)`: how many input beats
(within a frame) it must have accepted before it can emit its output beat j, counting from
j = 0. A FIFO, the fork, a pass-through: `identity_needed(j) = j + 1`. nnfpga_dense fills one
K-vector (K/IN_PAR beats) into a ping-pong buffer before computing its N/PE output beats,
so `dense_needed(j) = (j // (N/PE) + 1) * (K/IN_PAR)`.

Composition along a branch m_1 -> m_2 -> ... -> m_n: the branch's output beat j needs
m_n's inputs 0 .. needed_n(j) - 1, the last of which is m_(n-1)'s output beat
needed_n(j) - 1, and so on, so

    needed_branch(j) = needed_1(needed_2( ... needed_n(j) - 1 ... ) - 1)

(apply "index = needed(index) - 1" from the last module back to the first, then add one
to turn the last index into a count). Identities compose to the identity.

The bound. Take an add, which consumes beat j of both inputs together. Suppose the join
waits for the long branch's beat j; it has consumed beats 0..j-1 of both, and the long
branch can emit beat j only after the fork has passed it L = needed_long(j) beats. Every
beat the fork passed also went to the short branch (or waits for it in the fork's output
register), and the short branch has released only j of them to the join, so it must hold
L - j beats at once. With the short branch a FIFO of depth D behind the fork, it holds
D + 1 (the FIFO plus the fork's one-beat register for that output; nnfpga_add takes no
beat before both are there, so it adds nothing). No deadlock iff D + 1 >= L - j for every
j, that is

    D >= max_j (needed_long(j) - needed_short(j))        with needed_short(j) = j + 1.

Conversely a smaller D deadlocks deterministically at the worst j, whatever the timing:
the short side is full, the long side still lacks input. hw_tests/test_rtl_branches.py
measures it: for a dense (K = N) on the long branch the rule's depth runs bit-exact under
random gaps and backpressure, one beat less stalls, so the modules' pipeline registers
add nothing (`PIPELINE_SLACK = 0`): the add's, the dense's and the FIFO's registers are on
paths that do not hold beats of the short branch while the join waits.

For joins that do not take both inputs in lock step (a concat takes CA/PAR beats of a,
then CB/PAR beats of b per pixel), the same argument is made per step of the join that
takes a beat of the long input: with i_long the long-input beat it waits for and i_short
the next short-input beat it has not consumed yet, D >= needed_long(i_long) -
needed_short(i_short); `concat_join` lists those steps. The steps that wait for the short
input need no FIFO on the long branch as long as it can accept what the short branch
needs, which holds for the modules modelled here (their needed(j) >= j + 1).

Frames repeat: every module here is periodic (needed(j + F_out) = needed(j) + F_in), both
branches carry the same number of beats per frame into the join, so the difference is
periodic and one frame decides the maximum; back-to-back frames need no more.

Progress, not rate: the depth guarantees that the block never deadlocks, not that it runs
at full speed. The skip FIFO also throttles the long branch whenever it is full while the
long branch could already take more input: nnfpga_dense takes the next vector while
computing the current one, so it runs at its own rate only when the skip side can hold
two vectors' beats. Measured for the one-dense block of hw_tests/test_rtl_branches.py
(K = N = 8, one element per beat, 32 cycles per vector, 3 vectors per frame, no gaps):
depth 7 (the rule) 120 cycles per frame, 8 -> 108, 15 -> 96, the dense's own 3 * 32 (the
FIFO's ready is a register, so a slot freed by a beat leaving takes a new one a cycle later).
Likewise where the branches' latencies differ and the block could move a beat per cycle,
the side with the shorter latency needs room for the beats in flight on the other (with a
one-cycle FIFO on one side of an add and nothing on the other, the pair moves every other
cycle; the add tests show both cases).

Scope: exact when the short branch is FIFOs and pass-throughs only. If the short branch
has modules of its own (behind the FIFO), they hold the inputs of the beat the join waits
for, and the rule is one beat conservative. Modules whose needed(j) < j + 1 (a dense with
N/PE > K/IN_PAR) make the long branch itself fill up; the rule does not model their
internal capacity.
"""
from __future__ import annotations

from typing import Callable, Sequence

Needed = Callable[[int], int]
"""needed(j): input beats a module (or branch) must have accepted before it emits output beat j."""

PIPELINE_SLACK = 0
"""Beats added to the rule's depth for module pipeline registers; 0 as measured in
hw_tests/test_rtl_branches.py (the fork's output register already counts in the rule)."""


def identity_needed(j: int) -> int:
    """A FIFO, the fork, or any one-beat-in, one-beat-out module: beat j needs j + 1 inputs."""
    return j + 1


def dense_needed(k: int, n: int, pe: int, in_par: int) -> Needed:
    """nnfpga_dense: output beat j belongs to vector j // (N/PE), which needs that vector's
    K/IN_PAR input beats and all earlier vectors' in: (j // (N/PE) + 1) * (K/IN_PAR)."""
    if pe < 1 or n % pe:
        raise ValueError(f"pe={pe} must divide n={n}")
    if in_par < 1 or k % in_par:
        raise ValueError(f"in_par={in_par} must divide k={k}")
    out_beats, in_beats = n // pe, k // in_par

    def needed(j: int) -> int:
        return (j // out_beats + 1) * in_beats

    needed.__qualname__ = f"dense_needed(k={k}, n={n}, pe={pe}, in_par={in_par})"
    return needed


def branch_needed(funcs: Sequence[Needed]) -> Needed:
    """The needed function of modules in series, `funcs[0]` first (nearest the fork).

    needed_branch(j) = f_1(f_2(... f_n(j) - 1 ...) - 1); an empty branch is the identity.
    """
    funcs = list(funcs)

    def needed(j: int) -> int:
        index = j
        for f in reversed(funcs):
            count = f(index)
            if count < 1:
                raise ValueError(f"{getattr(f, '__qualname__', f)}({index}) = {count}: "
                                 "an output beat needs at least one input beat")
            index = count - 1
        return index + 1

    return needed


def lockstep_join(t: int) -> tuple[int, int]:
    """An add: its step t takes beat t of both inputs."""
    return t, t


def concat_join(pixels: int, ca_beats: int, cb_beats: int, long_input: str = "a"
                ) -> Callable[[int], tuple[int, int] | None]:
    """A concat's output beat t as a join step: (long-input beat it waits for, next unconsumed
    short-input beat), or None when the step takes the short input.

    `ca_beats`, `cb_beats` are beats per pixel (CA/PAR, CB/PAR); `long_input` names the input
    ("a" or "b") the long branch feeds.
    """
    if long_input not in ("a", "b"):
        raise ValueError(f"long_input must be 'a' or 'b', got {long_input!r}")
    per_pixel = ca_beats + cb_beats

    def step(t: int) -> tuple[int, int] | None:
        p, k = divmod(t, per_pixel)
        if k < ca_beats:  # takes a's beat p*ca + k; b has given p*cb
            a, b = p * ca_beats + k, p * cb_beats
            return (a, b) if long_input == "a" else None
        a, b = (p + 1) * ca_beats, p * cb_beats + k - ca_beats
        return (b, a) if long_input == "b" else None

    step.__qualname__ = f"concat_join(pixels={pixels}, ca_beats={ca_beats}, cb_beats={cb_beats})"
    return step


def skip_fifo_depth(long_needed: Needed, short_needed: Needed, out_beats: int,
                    join: Callable[[int], tuple[int, int] | None] | None = None
                    ) -> tuple[int, int, str]:
    """Minimal depth of the FIFO behind the fork on the short branch, the join step that
    decides it, and a short derivation for the compiler's report.

    `long_needed`, `short_needed`: fork beats each branch needs before its output beat j
    (see `branch_needed`); `out_beats`: the join's steps per frame (an add: its output beats
    per frame); `join`: step t -> (long beat, short beat) it involves, default `lockstep_join`
    (an add); `concat_join` for a concat. A depth of 0 means the branches need no FIFO.
    """
    if out_beats < 1:
        raise ValueError(f"out_beats must be >= 1, got {out_beats}")
    lockstep = join is None or join is lockstep_join
    join = join or lockstep_join
    best = None
    for t in range(out_beats):
        pair = join(t)
        if pair is None:
            continue
        i_long, i_short = pair
        nl, ns = long_needed(i_long), short_needed(i_short)
        if best is None or nl - ns > best[0]:
            best = (nl - ns, t, i_long, i_short, nl, ns)
    if best is None:
        raise ValueError("the join never waits for the long branch in a frame; nothing to size")
    diff, t, i_long, i_short, nl, ns = best
    depth = max(0, diff) + (PIPELINE_SLACK if diff > 0 else 0)
    where = f"j={t}" if lockstep else f"join step {t} (long beat {i_long}, short beat {i_short})"
    if diff <= 0:
        text = (f"the long branch never needs more fork beats than the skip branch before the join takes "
                f"them (largest difference {diff} at {where}), so no skip FIFO is needed")
    else:
        text = (f"the long branch emits beat j only after fork beat needed_long(j), the skip branch after "
                f"fork beat needed_short(j); the skip side holds its FIFO plus one beat in the fork's "
                f"register; worst {where}: needed_long={nl}, needed_short={ns}, so the skip FIFO holds "
                f"{nl} - {ns} = {diff} beats"
                + (f" + {PIPELINE_SLACK} for pipeline registers" if PIPELINE_SLACK else "")
                + f": depth {depth}")
    return depth, t, text


def split_join_depths(ca_beats: int, cb_beats: int) -> tuple[int, int, str]:
    """Depths of the FIFOs between the parts a and b of a split layer and their concat, and why.

    The two parts of a split layer (passes/split.py) read the same input through a fork and
    emit their beats for a pixel (or vector) side by side, each spread over the interval; the
    concat takes a pixel's CA/PAR beats of a, then its CB/PAR beats of b. Part b's beats of a
    pixel are all made by the time a's last one is taken, so b must hold CB/PAR beats; while
    the concat then drains them, part a is already making the next pixel's beats and must hold
    them. Without that room a part's own output FIFO fills, it stops issuing and taking input,
    and through the fork stops the other part too: the pair runs slower than either part (the
    digits MLP split in two, autofolded: 99 cycles per inference instead of its parts' 64). One
    pixel's beats on each side let both run at their own rate. No deadlock is at stake (a split
    join's fork needs no skip FIFO: both branches need one whole input vector per output
    vector); this is rate only. At least 2 beats each: a FIFO of 1 passes a beat every other cycle."""
    depth_a, depth_b = max(ca_beats, 2), max(cb_beats, 2)
    text = (f"part b holds its {cb_beats} beats of a pixel while the concat takes a's {ca_beats}, part a the next "
            f"pixel's while the concat takes b's: FIFOs of {depth_a} (a) and {depth_b} (b)")
    return depth_a, depth_b, text
