"""Generated RADIUS secrets paste anywhere: no leading "-" for radclient or a NAS CLI to
read as an option (the demo secret once made radclient fail with "invalid option -- 'G'")."""

from __future__ import annotations

from radmfa.cli.common import new_radius_secret


def test_generated_secrets_are_letters_and_digits_of_the_asked_length():
    seen = {new_radius_secret() for _ in range(2000)}
    assert len(seen) == 2000
    assert all(len(s) == 32 and s.isascii() and s.isalnum() for s in seen)
    assert len(new_radius_secret(24)) == 24
