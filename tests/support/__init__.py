"""Helpers shared by the test suites: a throw-away slapd, free ports, misbehaving servers."""
