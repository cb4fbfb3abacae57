"""The bucket that holds a slow client to min_rate (fcgi_backend/pace.py), by its arithmetic; the
HTTP flavour's tests (test_http_flavour.py) hold real trickling clients to it."""

import pytest

from fcgi_backend.pace import Pace


def seconds_waited_until_let_go(rate: float, read_timeout: float = 2.0, min_rate: int = 500,
                                step: float = 0.1, limit: float = 1000.0) -> float:
    """A client moving ``rate`` bytes a second, waited for in steps: how long until it is too slow."""
    pace, owed, waited = Pace(read_timeout, min_rate), 0.0, 0.0
    while not pace.too_slow and waited < limit:
        wait = min(step, pace.next_wait())
        owed += rate * wait
        moved = int(owed)
        owed -= moved
        pace.account(wait, moved)
        waited += wait
    return waited


@pytest.mark.parametrize("rate, expected", [(0, 2.0), (1, 2.0 / (1 - 1 / 500)), (250, 4.0), (400, 10.0)])
def test_a_client_below_min_rate_is_let_go_after_read_timeout_over_its_shortfall(rate, expected):
    assert seconds_waited_until_let_go(rate) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("rate", [500, 600, 100_000])
def test_a_client_at_min_rate_or_faster_is_never_let_go(rate):
    assert seconds_waited_until_let_go(rate) >= 1000.0


def test_savings_are_capped_at_read_timeout_and_each_wait_is_at_most_read_timeout():
    pace = Pace(2.0, 500)
    pace.account(0.0, 10_000_000)  # a fast start earns no more than read_timeout in hand
    assert pace.next_wait() == 2.0
    pace.account(2.0, 0)
    assert pace.too_slow and "2s behind min_rate (500 bytes a second)" in pace.describe("the client")


def test_min_rate_0_keeps_only_the_per_wait_deadline():
    pace = Pace(2.0, 0)
    pace.account(1000.0, 0)
    assert not pace.too_slow and pace.next_wait() == 2.0
