"""Live-patch providers through their command-line contract: stand-in
`kpatch` and `canonical-livepatch` executables on PATH print what the real
tools print (the formats of kpatch's `list` subcommand and of
`canonical-livepatch status --format json`), and keep their state in files
so that load/unload/refresh change what the next `list`/`status` says.
A real kernel live patch cannot be loaded on a build machine."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from agent.backends.subp import BASE_ENV
from agent.boot.decide import LiveOffer
from agent.boot.livepatch import (
    CanonicalLivepatch,
    Kpatch,
    LivepatchError,
    Provider,
    find_offer,
    parse_kpatch_list,
)

KERNEL = "5.14.0-284.11.1.el9_2.x86_64"
OLDER = "kpatch_5_14_0_284_11_1_1_1"
NEWER = "kpatch_5_14_0_284_11_1_1_2"

KPATCH = """#!/bin/sh
# Stand-in for kpatch(1): the output of the real `list`, `load`, `unload`.
state="{state}"
case "$1" in
list)
    echo "Loaded patch modules:"
    [ -f "$state/loaded" ] && sed 's/$/ [enabled]/' "$state/loaded"
    echo ""
    echo "Installed patch modules:"
    [ -f "$state/installed" ] && cat "$state/installed"
    exit 0 ;;
load)
    grep -q "^$2 " "$state/installed" || {{ echo "kpatch: can't find $2" >&2; exit 1; }}
    [ -f "$state/fail-load" ] && {{ echo "kpatch: failed to load $2" >&2; exit 1; }}
    echo "loading patch module: /var/lib/kpatch/{kernel}/$2.ko"
    echo "waiting (up to 15 seconds) for patch transition to complete..."
    echo "transition complete (2 seconds)"
    echo "$2" >> "$state/loaded"
    exit 0 ;;
unload)
    grep -q "^$2$" "$state/loaded" 2>/dev/null ||
        {{ echo "kpatch: module $2 not loaded" >&2; exit 1; }}
    echo "disabling patch module: $2"
    echo "waiting (up to 15 seconds) for patch transition to complete..."
    echo "transition complete (2 seconds)"
    echo "unloading patch module: $2"
    grep -v "^$2$" "$state/loaded" > "$state/loaded.new"; mv "$state/loaded.new" "$state/loaded"
    exit 0 ;;
esac
echo "usage: kpatch ..." >&2; exit 1
"""

LIVEPATCH = """#!/bin/sh
# Stand-in for canonical-livepatch: `status --format json` prints the
# recorded document; `refresh` applies what is available.
state="{state}"
case "$1 $2 $3" in
"status --format json") cat "$state/status.json"; exit 0 ;;
"refresh  ") sed -i 's/"State": "unapplied"/"State": "applied"/' "$state/status.json"
             echo "Done."; exit 0 ;;
esac
echo "unknown command: $*" >&2; exit 1
"""


def status_doc(state: str = "applied", supported: str = "supported", until: str = "2027-03-07"):
    """Shaped like the real `canonical-livepatch status --format json`."""
    return {
        "Client-Version": "10.8.3", "Architecture": "x86_64", "Last-Check": "2026-11-28T02:55:01Z",
        "Boot-Time": "2026-11-20T08:12:44Z", "Uptime": "186h42m17s",
        "Status": [
            {"Kernel": "6.8.0-40.40-generic", "Running": False, "Supported": "supported",
             "Livepatch": {"CheckState": "checked", "State": "applied", "Version": "99.1"},
             "UpgradeRequiredDate": "2026-01-01"},
            {"Kernel": "6.8.0-45.45-generic", "Running": True, "Supported": supported,
             "Livepatch": {
                 "CheckState": "checked", "State": state, "Version": "104.1",
                 "Fixes": [{"Name": "cve-2024-26597", "Description": "", "Bug": "",
                            "Patched": True}],
             },
             "UpgradeRequiredDate": until},
        ],
        "tier": "updates",
    }  # fmt: skip


def install(bin_dir: Path, name: str, text: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(text)
    tool.chmod(0o755)


@pytest.fixture
def env(tmp_path):
    return {"PATH": f"{tmp_path / 'bin'}:{BASE_ENV['PATH']}"}


@pytest.fixture
def kpatch(tmp_path, env):
    state = tmp_path / "kpatch"
    state.mkdir()
    (state / "installed").write_text(f"{OLDER} ({KERNEL})\n{NEWER} ({KERNEL})\n"
                                     "kpatch_5_14_0_70_1_1 (5.14.0-70.el9.x86_64)\n")  # fmt: skip
    install(tmp_path / "bin", "kpatch", KPATCH.format(state=state, kernel=KERNEL))
    return state


@pytest.fixture
def canonical(tmp_path, env):
    state = tmp_path / "livepatch"
    state.mkdir()
    install(tmp_path / "bin", "canonical-livepatch", LIVEPATCH.format(state=state))
    return state


def test_kpatch_list_is_parsed_as_the_real_one_prints_it():
    loaded, installed = parse_kpatch_list(
        "Loaded patch modules:\nkpatch_3_10_0_1062_1_1_1_4 [enabled]\n\n"
        "Installed patch modules:\nkpatch_3_10_0_1062_1_1_1_4 (3.10.0-1062.1.1.el7.x86_64)\n"
    )
    assert loaded == {"kpatch_3_10_0_1062_1_1_1_4": "enabled"}
    assert installed == [("kpatch_3_10_0_1062_1_1_1_4", "3.10.0-1062.1.1.el7.x86_64")]


def test_kpatch_offers_the_newest_patch_for_the_running_kernel(kpatch, env):
    offer = Kpatch(env=env).offer(KERNEL)
    assert offer == LiveOffer("kpatch", NEWER, loaded=False)
    assert Kpatch(env=env).offer("6.1.0-13-amd64") is None


def test_kpatch_loads_and_unloads_through_its_cli(kpatch, env):
    provider = Kpatch(env=env)
    offer = provider.offer(KERNEL)
    assert offer is not None
    applied = provider.apply(offer)
    assert (applied.patch_id, applied.loaded_by_us) == (NEWER, True)
    assert (kpatch / "loaded").read_text().split() == [NEWER]
    assert provider.offer(KERNEL) == LiveOffer("kpatch", NEWER, loaded=True)
    provider.revert(NEWER)
    assert (kpatch / "loaded").read_text().split() == []
    provider.revert(NEWER)  # again, as after a crash: nothing left to do


def test_kpatch_leaves_a_patch_loaded_before_it_alone(kpatch, env):
    (kpatch / "loaded").write_text(f"{NEWER}\n")
    applied = Kpatch(env=env).apply(LiveOffer("kpatch", NEWER, loaded=True))
    assert applied.loaded_by_us is False


def test_kpatch_load_failure_is_a_clean_error(kpatch, env):
    (kpatch / "fail-load").touch()
    with pytest.raises(LivepatchError, match="failed to load") as caught:
        Kpatch(env=env).apply(LiveOffer("kpatch", NEWER))
    assert caught.value.partial is False


def test_no_kpatch_installed_offers_nothing(tmp_path):
    assert Kpatch(env={"PATH": str(tmp_path)}).offer(KERNEL) is None


def test_canonical_livepatch_offers_the_running_kernels_patch_and_coverage(canonical, env):
    (canonical / "status.json").write_text(json.dumps(status_doc()))
    offer = CanonicalLivepatch(env=env).offer("6.8.0-45-generic")
    assert offer == LiveOffer("canonical-livepatch", "104.1", loaded=True,
                              covered_until=date(2027, 3, 7))  # fmt: skip


@pytest.mark.parametrize(
    ("state", "supported"),
    [("nothing-to-apply", "supported"), ("applied", "unsupported"), ("apply-failed", "supported"),
     ("kernel-upgrade-required", "supported")],
)  # fmt: skip
def test_canonical_livepatch_without_a_working_patch_offers_nothing(
    canonical, env, state, supported
):
    (canonical / "status.json").write_text(json.dumps(status_doc(state, supported)))
    assert CanonicalLivepatch(env=env).offer("6.8.0-45-generic") is None


def test_canonical_livepatch_refreshes_an_unapplied_patch(canonical, env):
    (canonical / "status.json").write_text(json.dumps(status_doc("unapplied"), indent=1))
    provider = CanonicalLivepatch(env=env)
    offer = provider.offer("6.8.0-45-generic")
    assert offer is not None
    assert offer.loaded is False
    applied = provider.apply(offer)
    assert (applied.patch_id, applied.loaded_by_us) == ("104.1", True)
    assert applied.covered_until == date(2027, 3, 7)
    assert provider.can_unload is False
    with pytest.raises(LivepatchError, match="cannot unload"):
        provider.revert("104.1")


def test_the_first_provider_with_a_patch_is_chosen(kpatch, canonical, env):
    (canonical / "status.json").write_text(json.dumps(status_doc()))
    providers: list[Provider] = [CanonicalLivepatch(env=env), Kpatch(env=env)]
    first = find_offer(providers, KERNEL)
    assert first is not None
    assert first.provider == "canonical-livepatch"
    (canonical / "status.json").write_text("not json")
    second = find_offer(providers, KERNEL)
    assert second is not None
    assert second.provider == "kpatch"
