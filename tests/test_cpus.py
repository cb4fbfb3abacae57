"""The CPU list syntax of --worker-cpus (as taskset -c and /sys/devices/system/cpu/online write it)."""

import os

import pytest

from fcgi_backend.cpus import checked_cpu_list, format_cpu_list, parse_cpu_list


@pytest.mark.parametrize("text, cpus", [
    ("1", {1}), ("0-3", {0, 1, 2, 3}), ("0,2-3", {0, 2, 3}), ("5, 1", {1, 5}), ("2-2", {2}),
])
def test_cpu_lists_as_taskset_takes_them(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "1,,2", "1.5", "0x1"])
def test_what_is_not_a_cpu_list_is_refused(text):
    with pytest.raises(ValueError, match="not a CPU list"):
        parse_cpu_list(text)


def test_lists_are_written_with_runs_joined():
    assert format_cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_cpu_list(format_cpu_list({3, 4, 9})) == {3, 4, 9}


def test_only_cpus_this_process_may_use_are_accepted():
    usable = os.sched_getaffinity(0)
    assert checked_cpu_list(format_cpu_list(usable)) == usable
    with pytest.raises(ValueError, match=f"CPU {max(usable) + 1} is not available here"):
        checked_cpu_list(str(max(usable) + 1))
