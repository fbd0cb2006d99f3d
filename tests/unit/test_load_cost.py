"""`fleetpatch-sim load`'s cost per check-in: the CPU seconds of the
measured processes per 1,000 check-ins answered over the whole run, and
the agents spread over several replicas."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from simulator.load import Measured, Plan, Tally, Usage, as_json, listening, merge, table


def test_cpu_per_thousand_check_ins_and_the_ratio_to_bare():
    plan = Plan("a:1,b:1", "a:2", b"")
    tallies = [
        Tally(checkins=800, total=1500, seconds=30),
        Tally(checkins=700, total=1500, seconds=30),
    ]
    ours = merge(
        "controller", plan, tallies, Measured(6.0, 50.0, 300.0, 2), Measured(1.5, 10, 1, 1)
    )
    bare = merge("bare", plan, tallies, Measured(1.5, 20.0, 60.0, 1))
    assert ours.checkins_total == 3000
    assert ours.cpu_seconds_per_1000 == 2.0
    assert ours.database_cpu_seconds_per_1000 == 0.5
    assert ours.processes == 2
    assert '"cpu_ratio": 4.0' in as_json([ours, bare])
    assert "controller 2.000 s (2 process(es)), bare 0.500 s: 4.00x" in table([ours, bare])
    assert ours.checkins_per_second == 50.0


def test_a_run_interrupted_during_the_ramp_measured_nothing():
    # The workers' windows had not begun (negative seconds): no rate is made up.
    plan = Plan("a:1", "a:2", b"", seconds=30)
    tallies = [Tally(total=40, seconds=-3.5), Tally(total=38, seconds=-3.4)]
    result = merge("controller", plan, tallies, None, interrupted=True)
    assert (result.seconds, result.checkins_per_second, result.checkins_total) == (0, 0, 78)
    assert "controller: interrupted after 0 s measured" in table([result])


def test_usage_counts_this_process_cpu_from_proc():
    usage = Usage([os.getpid()])
    end = time.process_time() + 0.2  # /proc counts in clock ticks (10 ms)
    while time.process_time() < end:
        pass
    measured = usage.done()
    assert measured is not None
    assert measured.cpu_seconds >= 0.1
    assert Usage(None).done() is None


def test_usage_of_a_process_gone_before_the_end_is_not_known():
    """A controller killed mid-run: no figure, rather than a 0 that reads
    as one (the table shows "-")."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        usage = Usage([child.pid])
    finally:
        child.kill()
        child.wait()
    assert usage.done() is None


def test_the_listening_process_is_found_by_its_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        # This process is left out (the load tool measures servers, not itself).
        assert os.getpid() not in listening([f"127.0.0.1:{port}"])
