#!/usr/bin/env python3
"""Text summaries of the profiles that profiles/run.sh records (standard library only).

    summarize.py folded FILE [--phase LABEL=SUBSTRING ...] [--title TEXT] [--event EVENT]
    summarize.py dhat FILE --units N [--title TEXT]
    summarize.py trim FILE --entry REGEX [--entry REGEX ...]  > TRIMMED

`folded` reads inferno-collapse-perf output (one `frame;frame;...;leaf COUNT` line per stack,
kernel frames suffixed `_[k]`, COUNT in the event's unit: nanoseconds for cpu-clock) and prints
where the CPU time goes: per phase (stacks containing a frame that contains SUBSTRING), per
category (each sample charged to the first recognised frame walking from the leaf towards the
root, so malloc called from the graph counts as allocation, a hash lookup as a hash lookup), the
hottest leaf frames, and the innermost frame of our own crates (std, alloc and kernel time charged
to the unitsync function that called it).

`dhat` reads a dhat-heap.json (dhat-rs, "rust-heap" mode) and prints totals, bytes per unit at
the end of the run (the live graph when `stress memory` wrote it), and the allocation sites grouped
by the innermost unitsync_core frame, by bytes live at the end and by bytes allocated in total.

`trim` shortens folded stacks for drawing: in each stack, the frames between the thread's name
and the innermost frame matching an --entry pattern (tried in the order given) are dropped, so a
flamegraph starts at the interesting function instead of a dozen rows of thread start-up, panic
guards and scheduler plumbing. Stacks that match no pattern are kept whole.
"""

import argparse
import collections
import json
import re

# Leaf-to-root matching: the first frame that matches any pattern decides the category. Patterns
# are tried in this order for each frame.
CATEGORIES = [
    ("allocator (malloc/free/realloc)",
     r"^(__GI___libc_malloc|__GI___libc_free|__libc_malloc|__libc_free|malloc|free|cfree|"
     r"_int_malloc|_int_free|_int_realloc|_int_memalign|_mid_memalign|__GI___libc_realloc|"
     r"realloc|malloc_consolidate|unlink_chunk|sysmalloc|tcache_\w+|__libc_calloc|"
     r"__posix_memalign|posix_memalign|aligned_alloc)$"),
    ("JSON encode/decode (serde_json)", r"serde_json::|serde::de::|serde::ser::|<serde_json"),
    ("state journal (ipc::journal)", r"unitsync_ipc::journal"),
    ("wake-ups (tokio Notify, wakers)", r"tokio::sync::notify|Notify>::notify|Waker>::wake|"
     r"wake_by_ref|tokio::runtime::task::waker"),
    ("event log publish (core::events)", r"unitsync_core::events::"),
    ("epoch reclamation (crossbeam-epoch)", r"crossbeam_epoch::"),
    ("unit table lookup (dashmap, hashing, str ==)",
     r"dashmap::|hashbrown::|core::hash::sip|unitsync_core::table::"),
    ("name checks and copies (core::name)", r"unitsync_core::name::|unitsync_core::error::valid_name"),
    ("Arc refcounts (clone/drop)", r"^<alloc::sync::(Arc|Weak)<T,A> as core::(clone::Clone|ops::drop::Drop)>"),
    ("graph operations (unitsync_core, other)", r"unitsync_core::"),
    ("frame read/write (ipc::frame)", r"unitsync_ipc::frame::"),
    ("request handling (ipc::server)", r"unitsync_ipc::server::"),
    ("client workload (benches)", r"unitsync_benches::"),
    ("tokio scheduler and I/O driver", r"tokio::|mio::"),
]
CATEGORIES = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]

# Syscall entry points in libc (the user frame just below the first kernel frame).
SYSCALLS = [
    ("kernel: socket recv (read side)", re.compile(r"recv|__libc_read$|__GI___libc_read$")),
    ("kernel: socket send (write side)", re.compile(r"send")),
    ("kernel: epoll_wait (tokio I/O driver parks)", re.compile(r"epoll_wait")),
    ("kernel: epoll_ctl / accept / close (connections)", re.compile(r"epoll_ctl|accept|close")),
    ("kernel: futex (thread park/unpark, contended locks)", re.compile(r"^syscall$|futex")),
    ("kernel: clock_gettime (Instant::now)", re.compile(r"clock_gettime")),
    ("kernel: heap growth (brk/mmap/mprotect/madvise)",
     re.compile(r"sbrk|brk|mmap|munmap|mprotect|madvise|sysmalloc|grow_heap|shrink_heap")),
    ("kernel: thread creation (clone3)", re.compile(r"clone")),
]
# Kernel entries that are not syscalls: charge the interrupted user code instead.
NOT_SYSCALL = re.compile(r"page_fault|irqentry|sysvec|apic_timer|ret_from_fork|schedule_tail")
OURS = re.compile(r"^<?unitsync_(core|ipc|benches)::|^<unitsync|^unitsync::|^stress::")


def read_folded(path):
    stacks = []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def categorise(frames):
    kernel = next((i for i, f in enumerate(frames) if f.endswith("_[k]")), None)
    if kernel is not None and not NOT_SYSCALL.search(frames[kernel]):
        gate = frames[kernel - 1] if kernel > 0 else ""
        for name, pattern in SYSCALLS:
            if pattern.search(gate):
                return name
        # e.g. write(2): decide by who called it.
        user = frames[:kernel]
        if any("journal" in f for f in user):
            return "kernel: journal file write"
        return "kernel: other syscall (" + gate + ")"
    user = frames[:kernel] if kernel is not None else frames
    for frame in reversed(user):
        for name, pattern in CATEGORIES:
            if pattern.search(frame):
                return name
    return "other (std, libc, thread start)"


def pct(part, total):
    return 100.0 * part / total if total else 0.0


def short(frame, width=140):
    return frame if len(frame) <= width else frame[: width - 1] + "…"


def table(title, counter, total, limit):
    print(f"\n## {title}\n")
    for name, count in counter.most_common(limit):
        print(f"{pct(count, total):6.2f}%  {short(name)}")


def folded(args):
    stacks = read_folded(args.file)
    total = sum(count for _, count in stacks)
    print(f"# {args.title or args.file}\n")
    if args.event == "cpu-clock":
        print(f"{len(stacks)} distinct stacks, {total / 1e9:.3f} s of sampled CPU time "
              f"(cpu-clock: counts are nanoseconds)")
    else:
        print(f"{len(stacks)} distinct stacks, {total:,} {args.event} sampled")
    if args.phase:
        phases = collections.Counter()
        for frames, count in stacks:
            matched = [label for label, needle in args.phase if any(needle in f for f in frames)]
            for label in matched or ["(none of the above)"]:
                phases[label] += count
        print("\n## Phases (stacks containing a marker frame; a stack may count in several)\n")
        for label, _ in args.phase + [("(none of the above)", "")]:
            if phases[label]:
                print(f"{pct(phases[label], total):6.2f}%  {label}")
    categories, leaves, ours = collections.Counter(), collections.Counter(), collections.Counter()
    for frames, count in stacks:
        categories[categorise(frames)] += count
        leaves[frames[-1]] += count
        mine = next((f for f in reversed(frames) if OURS.search(f)), "(no unitsync frame)")
        ours[mine] += count
    table("Where the time goes (each sample charged to the first recognised frame from the leaf)",
          categories, total, 40)
    table("Hottest leaf frames (self time; inlined frames count as their own)", leaves, total, 30)
    table("Innermost unitsync frame (std, alloc and kernel time charged to our caller)",
          ours, total, 30)


FRAME = re.compile(r"^0x[0-9a-f]+: (.*?)(?: \(([^()]*:\d+:\d+)\))?$")


def frame_text(ftbl, index):
    text = ftbl[index]
    match = FRAME.match(text)
    if not match:
        return text, ""
    return match.group(1), match.group(2) or ""


def dhat(args):
    data = json.load(open(args.file, encoding="utf-8"))
    ftbl, pps = data["ftbl"], data["pps"]
    units = args.units
    total_b = sum(p["tb"] for p in pps)
    total_bk = sum(p["tbk"] for p in pps)
    gmax_b = sum(p["gb"] for p in pps)
    gmax_bk = sum(p["gbk"] for p in pps)
    end_b = sum(p["eb"] for p in pps)
    end_bk = sum(p["ebk"] for p in pps)
    print(f"# {args.title or args.file}\n")
    command = re.sub(r" --dhat-out \S+", "", data.get("cmd", "?")).split("/")[-1]
    print(f"command: {command}")
    print(f"total allocated:          {total_b:>12,} bytes in {total_bk:>10,} blocks"
          f"  ({total_b / units:,.1f} B/unit)")
    print(f"max live (t-gmax):        {gmax_b:>12,} bytes in {gmax_bk:>10,} blocks"
          f"  (graph being built + the workload's plan of names and edges)")
    print(f"live at end (t-end):      {end_b:>12,} bytes in {end_bk:>10,} blocks"
          f"  = the finished graph of {units:,} units")
    print(f"per unit at end:          {end_b / units:>12,.1f} bytes in {end_bk / units:>10.2f} blocks"
          f"  (requested sizes; glibc adds an 8 B header per block"
          f" and rounds up to 16 B, minimum 32 B)")

    sites = {}
    for p in pps:
        frames = [frame_text(ftbl, i) for i in p["fs"]]
        # fs[0] is the allocation point; find the innermost frame of our core crate.
        index = next((i for i, (name, _) in enumerate(frames)
                      if name.startswith(("unitsync_core::", "<unitsync_core::"))), None)
        if index is None:
            index = next((i for i, (name, _) in enumerate(frames)
                          if OURS.search(name)), len(frames) - 1)
        name, where = frames[index]
        via = frames[index - 1][0] if index > 0 else ""
        key = (name, where, via)
        site = sites.setdefault(key, collections.Counter())
        for field in ("tb", "tbk", "gb", "gbk", "eb", "ebk"):
            site[field] += p[field]

    def print_sites(title, field, limit=15):
        print(f"\n## {title}\n")
        print(f"{'live at end':>14} {'B/unit':>7} {'blocks':>9} {'allocated':>13} {'blocks':>9}"
              f"  site (innermost unitsync_core frame)  <- via")
        ranked = sorted(sites.items(), key=lambda item: -item[1][field])
        for (name, where, via), s in ranked[:limit]:
            if s[field] == 0:
                break
            print(f"{s['eb']:>14,} {s['eb'] / units:>7.1f} {s['ebk']:>9,} {s['tb']:>13,} "
                  f"{s['tbk']:>9,}  {short(name, 70)} ({where})  <- {short(via, 60)}")

    print_sites("Allocation sites by bytes live at the end (what a unit costs)", "eb")
    print_sites("Allocation sites by bytes allocated in total (churn while building)", "tb")


def trim(args):
    entries = [re.compile(pattern) for pattern in args.entry]
    merged = collections.Counter()
    for frames, count in read_folded(args.file):
        for entry in entries:
            # The innermost match: a tokio worker is itself a task of the blocking pool.
            index = next((i for i in range(len(frames) - 1, 0, -1) if entry.search(frames[i])),
                         None)
            if index is not None:
                frames = frames[:1] + frames[index:]
                break
        merged[";".join(frames)] += count
    for stack in sorted(merged):
        print(f"{stack} {merged[stack]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("folded")
    f.add_argument("file")
    f.add_argument("--title")
    f.add_argument("--event", default="cpu-clock", help="the perf event the counts are of")
    f.add_argument("--phase", action="append", default=[],
                   type=lambda s: tuple(s.split("=", 1)), metavar="LABEL=SUBSTRING")
    d = sub.add_parser("dhat")
    d.add_argument("file")
    d.add_argument("--units", type=int, required=True)
    d.add_argument("--title")
    t = sub.add_parser("trim")
    t.add_argument("file")
    t.add_argument("--entry", action="append", required=True, metavar="REGEX")
    args = parser.parse_args()
    {"folded": folded, "dhat": dhat, "trim": trim}[args.command](args)


if __name__ == "__main__":
    main()
