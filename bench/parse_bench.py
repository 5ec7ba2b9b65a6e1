"""Benchmark for the configuration parser: prints figures, asserts nothing.

Owns nothing but the measurement.  Generates files of N mroute lines -- exact
(S,G) routes with two outbound interfaces, and templates ((*,G) and group
ranges) -- and times `parse_text` on them, cold (first call in the process,
including building the lark parser) and warm (best of several runs).

Targets (doc/SPEC.md): 10,000 lines <= 0.15 s, 100,000 lines <= 1.5 s.

    .venv/bin/python bench/parse_bench.py
"""

from __future__ import annotations

import time

from smcroute.parser import parse_text


def exact_sg(n: int) -> str:
    return "\n".join(
        f"mroute from eth0 source 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} "
        f"group 225.1.{i >> 8 & 255}.{i & 255} to eth1 eth2"
        for i in range(n)
    )


def templates(n: int) -> str:
    out = []
    for i in range(n):
        g = f"{224 + (i >> 16) % 16}.{i >> 8 & 255}.{i & 255}"
        if i % 2:
            out.append(f"mroute from eth{i % 7} group {g}.0/24 to eth8 eth9  # range")
        else:
            out.append(f"mroute from eth+ group {g}.1 source 10.{i & 255}.0.0/16 to eth9")
    return "\n".join(out)


def run(name: str, text: str, lines: int, repeat: int) -> None:
    best = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        cfg, problems = parse_text(text, "bench.conf")
        best = min(best, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    errors = [p for p in problems if not p.warning]
    assert not errors, errors[:3]
    assert len(cfg.routes) == lines, (len(cfg.routes), lines)
    print(
        f"{name:10} {lines:>7} lines  {best:8.4f} s wall  {cpu:8.4f} s cpu  "
        f"{lines / best:>11,.0f} lines/s"
    )


def main() -> None:
    t = time.perf_counter()
    parse_text(exact_sg(10_000), "bench.conf")
    print(
        f"cold: first 10,000 exact lines incl. building the lark parser: "
        f"{time.perf_counter() - t:.4f} s"
    )
    # For reference: lark on every real line, as the shape cache avoids.
    from smcroute.parser.syntax import parse_with_lark

    lines = exact_sg(1_000).split("\n")
    t = time.perf_counter()
    for line in lines:
        parse_with_lark(line)
    per = (time.perf_counter() - t) / len(lines)
    print(
        f"reference: lark alone, structure only: {per * 1e6:.0f} us/line "
        f"(10,000 lines: {per * 1e4:.2f} s)"
    )
    for n in (1_000, 10_000, 100_000):
        run("exact", exact_sg(n), n, 5 if n < 100_000 else 3)
        run("templates", templates(n), n, 5 if n < 100_000 else 3)


if __name__ == "__main__":
    main()
