#!/usr/bin/env python3
"""Compare two Prometheus expositions series by series: logmill's and mtail's.

usage: compare.py LOGMILL.prom MTAIL.prom

mtail's `prog` label is ignored. Sums may differ in the last bits (summation order);
counts must be equal. One known mtail defect is allowed and reported: it counts observations
equal to 0 in `_count` but in no bucket, so each of its buckets (and +Inf) is short by the
same number, `_count - +Inf`. Exits 1 on any other difference.
"""
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def load(path):
    out = {}
    for line in open(path):
        if line.startswith('#') or not line.strip():
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted((k, v) for k, v in LABEL.findall(m.group(2) or '') if k != 'prog'))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series_of(key):
    name, labels = key
    base = re.sub(r'_(bucket|count|sum)$', '', name)
    return base, tuple(l for l in labels if l[0] != 'le')


def main():
    ours, theirs = load(sys.argv[1]), load(sys.argv[2])
    # mtail's missing zero observations per histogram series.
    missing_zeros = {}
    for key, v in theirs.items():
        if key[0].endswith('_count'):
            base, labels = series_of(key)
            inf = theirs.get((base + '_bucket', tuple(sorted(labels + (('le', '+Inf'),)))))
            if inf is not None:
                missing_zeros[(base, labels)] = v - inf
    bad, defect, same = [], 0, 0
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None:
            bad.append(f'{key}: logmill {a} mtail {b}')
            continue
        if a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b)):
            same += 1
            continue
        if key[0].endswith('_bucket') and a - b == missing_zeros.get(series_of(key), 0) > 0:
            defect += 1
            continue
        bad.append(f'{key}: logmill {a} mtail {b}')
    zeros = int(sum(missing_zeros.values()))
    print(f'{same} series equal; {defect} bucket values differ only by mtail dropping '
          f'{zeros} zero-valued observations from buckets; {len(bad)} other differences')
    for line in bad[:20]:
        print('  ' + line)
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
