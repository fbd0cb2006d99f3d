"""Reading pending security fixes from `apt-cache policy` output as apt
prints it (Debian 12, C locale)."""

from __future__ import annotations

from agent.backends import aptpolicy

FILES = """\
Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     release v=12,o=Debian,a=oldstable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64
     origin deb.debian.org
 500 http://deb.debian.org/debian bookworm-updates/main amd64 Packages
     release v=12-updates,o=Debian,a=oldstable-updates,n=bookworm-updates,l=Debian,c=main,b=amd64
     origin deb.debian.org
 500 http://deb.debian.org/debian bookworm/main amd64 Packages
     release v=12.15,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64
     origin deb.debian.org
Pinned packages:
"""

VERSIONS = """\
openssh-server:
  Installed: 1:9.2p1-2+deb12u7
  Candidate: 1:9.2p1-2+deb12u10
  Version table:
     1:9.2p1-2+deb12u10 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
     1:9.2p1-2+deb12u9 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 1:9.2p1-2+deb12u7 100
        100 /var/lib/dpkg/status
bash:
  Installed: 5.2.15-2+b8
  Candidate: 5.2.15-2+b13
  Version table:
     5.2.15-2+b13 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 5.2.15-2+b8 100
        100 /var/lib/dpkg/status
libssl3:
  Installed: 3.0.17-1~deb12u2
  Candidate: 3.0.17-1~deb12u3
  Version table:
     3.0.17-1~deb12u3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 3.0.17-1~deb12u2 100
        100 /var/lib/dpkg/status
     3.0.11-1~deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
"""


def test_a_security_fix_counts_even_when_the_candidate_comes_from_another_suite():
    files = aptpolicy.releases(FILES)
    found = aptpolicy.with_security_fix(VERSIONS, files, ["openssh-server", "bash", "libssl3"])
    # openssh: deb12u9 from security is newer than what is installed.
    # bash: nothing from security. libssl3: the security version is older
    # than the installed one, so no fix is pending.
    assert found == {"openssh-server"}


def test_only_the_names_asked_about_are_judged():
    files = aptpolicy.releases(FILES)
    assert aptpolicy.with_security_fix(VERSIONS, files, ["bash"]) == set()


def test_release_fields_are_read_per_package_file():
    files = aptpolicy.releases(FILES)
    security = files["http://deb.debian.org/debian-security bookworm-security/main amd64 Packages"]
    assert security["l"] == "Debian-Security"
    assert files["/var/lib/dpkg/status"] == {"a": "now"}


def test_what_makes_a_source_a_security_source():
    assert aptpolicy.is_security("file:/repo ./ Packages", {"a": "stable-security"})
    assert aptpolicy.is_security("file:/repo ./ Packages", {"n": "noble-security"})
    assert aptpolicy.is_security("file:/repo ./ Packages", {"l": "Ubuntu-Security"})
    assert aptpolicy.is_security("http://m/debian-security bookworm-security/main amd64", {})
    assert not aptpolicy.is_security("http://m/debian bookworm/main amd64 Packages", {"a": "x"})
    assert not aptpolicy.is_security("http://m/security bookworm/main", {"n": "bookworm"})
