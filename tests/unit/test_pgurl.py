"""`[store] url` checked before libpq reads it (controller.pgurl): a URI
that libpq would misread is refused in words that quote none of it, and
libpq's own words lose the password."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from controller import pgurl
from controller.datadir import DataDir
from controller.errors import UsageError

SECRET = "SEKRIT"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # libpq quotes the whole password as a bad escape
        (f"postgresql://fp:hunter2%zz{SECRET}@db:5432/fp", "'%' that starts no %XX escape"),
        (f"postgresql://fp:pw@db/fp?password=a%{SECRET}", "'%' that starts no %XX escape"),
        # libpq takes what follows the first '@' for the host, and names it
        (f"postgresql://fp:hun@ter2-{SECRET}@db:5432/fp", "an '@' in the user or password"),
        # ... or the password's tail for the database
        (f"postgresql://fp:hunter2/{SECRET}@db:5432/fp", "an '@' after the host"),
        (f"postgresql://fp:hun?{SECRET}@db:5432/fp", "an '@' after the host"),
        (f"postgresql://fp:hun#{SECRET}@db:5432/fp", "an '@' after the host"),
        (f"postgresql://fp:{SECRET}@[::1/fp", "is not a URL"),  # urllib would raise
        (f"postgresql://fp:{SECRET}@db:99999/fp", "not a number from 1 to 65535"),
        (f"postgresql://fp:{SECRET}@db:0/fp", "not a number from 1 to 65535"),
        (f"postgresql://fp:{SECRET}@a:5432,b:x/fp", "not a number from 1 to 65535"),
        (f"mysql://fp:{SECRET}@db/fp", "must be a postgresql:// URL"),
    ],
)
def test_a_url_libpq_would_misread_is_refused_quoting_none_of_it(url, why):
    found = pgurl.problem(url)
    assert found is not None
    assert why in found
    assert SECRET not in found


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://fp:s%40cret%2Fx@db.example.com:5432/fp?sslmode=verify-full",
        "postgres://fp@/fp?host=/run/postgresql",
        "postgresql://fp:pw@a:5432,b:5433,[::1]:5434/fp?target_session_attrs=read-write",
        "postgresql://",
    ],
)
def test_a_well_formed_url_passes_and_libpq_reads_it(url):
    assert pgurl.problem(url) is None
    conninfo_to_dict(url)  # raises if libpq cannot


def test_the_password_is_scrubbed_as_written_and_as_decoded():
    url = f"postgresql://fp:{SECRET}%40x@db/fp"
    said = f'connection to "db" failed for fp:{SECRET}%40x, or {SECRET}@x'
    assert pgurl.scrub(said, url) == 'connection to "db" failed for ***, or ***'
    assert pgurl.scrub(said, f"postgresql://db/fp?password={SECRET}%40x").count(SECRET) == 0
    # a user without a password: the user's name is not a secret
    assert pgurl.scrub('for user "fp"', "postgresql://fp@db/fp") == 'for user "fp"'


def test_the_settings_file_refuses_it_in_one_line_without_the_password(tmp_path):
    url = f"postgresql://fp:hun@ter2-{SECRET}@db:5432/fp"
    (tmp_path / "controller.toml").write_text(f"[store]\nurl = '{url}'\n")
    with pytest.raises(UsageError, match=r"store\.url holds an '@' in the user") as caught:
        DataDir(tmp_path).settings()
    assert SECRET not in str(caught.value)
    assert "\n" not in str(caught.value)
