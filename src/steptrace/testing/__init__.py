"""Test doubles for steptrace users: fake model API servers, the scripted
provider, and a guard that fails a test which reaches a real network address."""
