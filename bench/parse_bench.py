"""Parse-only throughput: our C multipart parser against python-multipart and streaming-form-data.

The same bodies, fed in 8 KiB chunks as mod_proxy_fcgi delivers them:
  * one 256 MiB binary file;
  * 20,000 small fields.
Every parser keeps the fields and drops the file's bytes: ours with store_files=False,
python-multipart through its callbacks, streaming-form-data with ValueTargets and a NullTarget.
A second row for ours also writes the file part to a temporary file (on /dev/shm, so the disk does
not set the pace), as it does when serving. Runs are interleaved; the table gives medians and the
ratio of each parser's time to ours.

    python bench/parse_bench.py [--runs 5] [--json results.json]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from python_multipart import MultipartParser
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import NullTarget, ValueTarget

from benchlib import in_turn, bench_arguments, write_json
from fcgi_backend.limits import Limits
from fcgi_backend.uploads import MultipartUpload

BOUNDARY = b"----benchBoundaryZmNnaS1iYWNrZW5k"
CHUNK = 8192
MiB = 1024 * 1024


def big_file_body(size: int) -> bytes:
    data = os.urandom(MiB) * (size // MiB)
    return (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + BOUNDARY + b"--\r\n")


def small_fields_body(count: int) -> bytes:
    parts = [b"--" + BOUNDARY + f'\r\nContent-Disposition: form-data; name="field{i}"\r\n\r\nvalue number {i}\r\n'.encode()
             for i in range(count)]
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def chunks(body: bytes) -> list[bytes]:
    """The body as a socket would hand it over: separate bytes objects of 8 KiB."""
    return [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]


def run_ours(pieces, field_names, upload_dir, store_files=False) -> None:
    upload = MultipartUpload(BOUNDARY, Limits(upload_dir=upload_dir, max_parts=100_000, max_memory=64 * MiB),
                             store_files=store_files)
    for piece in pieces:
        upload.feed(piece)
    upload.finish()
    fields, files = upload.results()
    for f in files.values():
        f.discard()
    upload.close()


def run_python_multipart(pieces, field_names, upload_dir) -> None:
    fields, current = [], bytearray()
    in_file = [False]

    def on_part_begin():
        current.clear()

    def on_header_value(data, start, end):
        if b"filename=" in data[start:end]:
            in_file[0] = True

    def on_part_data(data, start, end):
        if not in_file[0]:
            current.extend(data[start:end])

    def on_part_end():
        if not in_file[0]:
            fields.append(bytes(current))
        in_file[0] = False

    parser = MultipartParser(BOUNDARY, {"on_part_begin": on_part_begin, "on_header_value": on_header_value,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    for piece in pieces:
        parser.write(piece)
    parser.finalize()


def run_streaming_form_data(pieces, field_names, upload_dir) -> None:
    parser = StreamingFormDataParser(headers={"Content-Type": "multipart/form-data; boundary=" + BOUNDARY.decode()})
    for name in field_names:
        parser.register(name, ValueTarget() if name != "file" else NullTarget())
    for piece in pieces:
        parser.data_received(piece)


def run_ours_storing(pieces, field_names, upload_dir) -> None:
    run_ours(pieces, field_names, upload_dir, store_files=True)


PARSERS = {"fcgi_backend (C)": run_ours, "fcgi_backend (C), writing the file": run_ours_storing,
           "python-multipart": run_python_multipart, "streaming-form-data": run_streaming_form_data}


def measure(workload: str, body: bytes, field_names: list[str], runs: int, upload_dir: str,
            single_run: tuple[str, ...] = ()) -> dict:
    """Median times over ``runs`` interleaved rounds; parsers in ``single_run`` run once (too slow)."""
    pieces = chunks(body)
    times: dict[str, list[float]] = {name: [] for name in PARSERS}
    for round_no in range(runs):
        for name, parse in in_turn(PARSERS.items(), round_no):  # interleaved, so machine noise hits all alike
            if name in single_run and round_no:
                continue
            start = time.perf_counter()
            parse(pieces, field_names, upload_dir)
            times[name].append(time.perf_counter() - start)
    result = {"workload": workload, "bytes": len(body), "runs": runs, "single_run": list(single_run),
              "parsers": {}}
    ours = statistics.median(times["fcgi_backend (C)"])
    for name, samples in times.items():
        median = statistics.median(samples)
        result["parsers"][name] = {"median_s": median, "mb_per_s": len(body) / median / 1e6,
                                   "ours_speedup": median / ours}
    return result


def print_table(results: list[dict]) -> None:
    print("| workload | parser | median time | throughput | fcgi_backend is |")
    print("|---|---|---|---|---|")
    for r in results:
        for name, p in r["parsers"].items():
            runs = 1 if name in r["single_run"] else r["runs"]
            ratio = "—" if name.startswith("fcgi_backend") else f"{p['ours_speedup']:.1f}x faster"
            if name == "fcgi_backend (C), writing the file":
                ratio = "(the same, storing the file)"
            print(f"| {r['workload']} | {name} ({runs} run{'s' if runs > 1 else ''}) | {p['median_s'] * 1000:.0f} ms "
                  f"| {p['mb_per_s']:.0f} MB/s | {ratio} |")


def main() -> int:
    parser = bench_arguments(__doc__, runs=5)
    parser.add_argument("--file-mib", type=int, default=256)
    parser.add_argument("--fields", type=int, default=20_000)
    args = parser.parse_args()
    upload_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    results = [
        measure(f"one {args.file_mib} MiB file, 8 KiB chunks", big_file_body(args.file_mib * MiB), ["file"],
                args.runs, upload_dir),
        measure(f"{args.fields:,} small fields, 8 KiB chunks", small_fields_body(args.fields),
                [f"field{i}" for i in range(args.fields)], args.runs, upload_dir,
                single_run=("streaming-form-data",)),  # one field target each: tens of seconds a run
    ]
    print_table(results)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
