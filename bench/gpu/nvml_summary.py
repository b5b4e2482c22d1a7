"""Summarizes nvml_samples output: per pid, the gaps between sample timestamps, the delay from a
sample's timestamp to the query that first saw it, and the busy time the samples add up to."""
import statistics
import sys

samples = {}
for line in sys.stdin:
    fields = line.split()
    if fields and fields[0] == "sample":
        seen, pid, stamp, util = (int(x) for x in fields[1:])
        samples.setdefault(pid, []).append((stamp, seen, util))
for pid, rows in samples.items():
    rows.sort()
    gaps = [b[0] - a[0] for a, b in zip(rows, rows[1:])]
    delays = [seen - stamp for stamp, seen, _ in rows]
    busy = sum(gap * util / 100 for gap, (_, _, util) in zip(gaps, rows[1:]))
    span = rows[-1][0] - rows[0][0]
    q = lambda xs: (min(xs), statistics.median(xs), max(xs)) if xs else None
    print(f"pid {pid}: {len(rows)} samples over {span / 1e6:.2f} s; gap us min/med/max {q(gaps)}; "
          f"delay us {q(delays)}; busy {busy / max(span, 1):.3f} of the span; "
          f"util values {sorted(set(u for _, _, u in rows))[:12]}")
