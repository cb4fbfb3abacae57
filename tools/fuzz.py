#!/usr/bin/env python3
"""Run the libFuzzer harnesses of connector_c/fuzz/ (built by `make fuzz-build`).

Each harness starts from its corpus in the repository (connector_c/fuzz/corpus/NAME) and works in a
copy under build/fuzz/, so a run never changes the repository unless asked with --merge (which adds
the inputs that reach new code, minimised). A crash leaves its input in build/fuzz/artifacts/;
copy it to connector_c/fuzz/regressions/NAME/ once fixed, so every later run replays it.

    tools/fuzz.py --seconds 300            # every harness, side by side on the machine's cores
    tools/fuzz.py --seconds 60 upload      # one harness
    tools/fuzz.py --replay                 # run each stored input once (corpus and regressions)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUZZ_SOURCES = REPO / "connector_c" / "fuzz"
BUILD = REPO / "build" / "fuzz"
HARNESSES = ("multipart", "upload", "fcgi_stdin", "wire", "fcgi_request")
MAX_LEN = {"fcgi_stdin": 96 * 1024}  # the harness's own bound; others use libFuzzer's default


@dataclass
class Outcome:
    name: str
    returncode: int
    runs: int
    log_tail: str
    artifacts: list[Path]

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def binary(name: str) -> Path:
    return BUILD / f"fuzz_{name}"


def stored_inputs(name: str) -> list[Path]:
    """Every input kept in the repository for a harness: its corpus and its regressions."""
    return sorted(p for kind in ("corpus", "regressions") for p in (FUZZ_SOURCES / kind / name).glob("*")
                  if p.is_file())


def _runs(log: str) -> int:
    for line in reversed(log.splitlines()):
        if "stat::number_of_executed_units:" in line:
            return int(line.split(":")[-1])
    return 0


def campaign(names: list[str], seconds: int, merge: bool = False) -> list[Outcome]:
    """Fuzz each harness for ``seconds``, all at once (each is one process)."""
    artifacts = BUILD / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in names:
        work = BUILD / f"corpus-{name}"
        work.mkdir(parents=True, exist_ok=True)
        args = [str(binary(name)), str(work), str(FUZZ_SOURCES / "corpus" / name),
                f"-max_total_time={seconds}", "-print_final_stats=1", f"-artifact_prefix={artifacts}/{name}-",
                "-timeout=10", "-rss_limit_mb=1024"]
        if name in MAX_LEN:
            args.append(f"-max_len={MAX_LEN[name]}")
        log = open(BUILD / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=BUILD), log)
    outcomes = []
    for name, (proc, log) in procs.items():
        try:
            proc.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        text = (BUILD / f"{name}.log").read_text(errors="replace")
        found = sorted(artifacts.glob(f"{name}-*"))
        outcomes.append(Outcome(name, proc.returncode, _runs(text), "\n".join(text.splitlines()[-40:]), found))
        if merge and proc.returncode == 0:
            subprocess.run([str(binary(name)), "-merge=1", str(FUZZ_SOURCES / "corpus" / name),
                            str(BUILD / f"corpus-{name}")], capture_output=True, check=True)
    return outcomes


def replay(names: list[str]) -> list[Outcome]:
    """Run every stored input of each harness once."""
    outcomes = []
    for name in names:
        inputs = stored_inputs(name)
        if not inputs:
            outcomes.append(Outcome(name, 0, 0, "", []))
            continue
        proc = subprocess.run([str(binary(name)), *map(str, inputs)], capture_output=True, text=True, cwd=BUILD)
        outcomes.append(Outcome(name, proc.returncode, len(inputs), proc.stderr[-4000:], []))
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"harnesses to run (default: all of {', '.join(HARNESSES)})")
    parser.add_argument("--seconds", type=int, default=300, help="fuzzing time per harness (default 300)")
    parser.add_argument("--replay", action="store_true", help="only run the stored inputs once")
    parser.add_argument("--merge", action="store_true", help="add inputs that reach new code to the repository's corpus")
    args = parser.parse_args()
    names = args.names or list(HARNESSES)
    unknown = set(names) - set(HARNESSES)
    if unknown:
        parser.error(f"unknown harness {', '.join(sorted(unknown))}; known: {', '.join(HARNESSES)}")
    missing = [n for n in names if not binary(n).exists()]
    if missing:
        print(f"not built: {', '.join(missing)} (run `make fuzz-build`)", file=sys.stderr)
        return 2
    started = time.monotonic()
    outcomes = replay(names) if args.replay else campaign(names, args.seconds, args.merge)
    for o in outcomes:
        verdict = "ok" if o.ok else f"FAILED (exit {o.returncode})"
        print(f"{o.name:12} {o.runs:>12,} runs  {verdict}")
        if not o.ok:
            print(o.log_tail)
            for a in o.artifacts:
                print(f"  crashing input: {a}  (fix, then copy to connector_c/fuzz/regressions/{o.name}/)")
    print(f"{time.monotonic() - started:.0f} s")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
