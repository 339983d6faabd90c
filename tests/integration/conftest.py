"""Integration-test fixtures: real slapd, thread pools and misbehaving servers on loopback."""

from tests.support.fixtures import *  # noqa: F403
