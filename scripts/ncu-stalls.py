#!/usr/bin/env python3
"""Summarises where a kernel's warps stall, from an ncu source-page CSV.

Produce the CSV on the GPU machine with
    ncu --section WarpStateStats --section SourceCounters --page source --csv \
        --print-source sass -k regex:<kernel> -c 1 <command> > stalls.csv
then run `scripts/ncu-stalls.py stalls.csv [top]` anywhere: it prints the share of stall samples
per SASS opcode (HGMMA, LDS, SYNCS for mbarrier waits, STG, ...) and the `top` (default 25)
instructions with the most samples, with their addresses, so a hot spot can be found in the
`--print-source sass` listing.
"""
import csv
import re
import sys
from collections import Counter


def rows(path):
    """Yields dicts of the source table, whatever ncu printed before its header row."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    start = None
    for i, line in enumerate(lines):
        if "Source" in line and re.search(r"Stall Sampling \(All", line):
            start = i
            break
    if start is None:
        sys.exit("no source table with 'Warp Stall Sampling (All Samples)' found: was it --page source --csv?")
    yield from csv.DictReader(lines[start:])


def number(s):
    try:
        return float(str(s).replace(",", ""))
    except ValueError:
        return 0.0


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    table = list(rows(sys.argv[1]))
    if not table:
        sys.exit("the source table is empty")
    all_col = next(c for c in table[0] if re.search(r"Stall Sampling \(All", c))
    by_op, per_inst, total = Counter(), [], 0.0
    for r in table:
        n = number(r.get(all_col, 0))
        src = (r.get("Source") or "").strip()
        # "@P0 HGMMA.64x256x32.S8 ..." -> "HGMMA"
        words = [w for w in src.split() if not w.startswith("@")]
        op = words[0].split(".")[0] if words else "?"
        by_op[op] += n
        per_inst.append((n, r.get("Address", ""), src))
        total += n
    if total == 0:
        sys.exit("no stall samples in the table")
    print(f"{int(total)} samples ({all_col})")
    print("\nby opcode:")
    for op, n in by_op.most_common(20):
        print(f"  {100 * n / total:5.1f} %  {op}")
    print(f"\ntop {top} instructions:")
    for n, addr, src in sorted(per_inst, reverse=True)[:top]:
        print(f"  {100 * n / total:5.1f} %  {addr:>8}  {src[:100]}")


if __name__ == "__main__":
    main()
