"""End-to-end tests: every test module that starts a server (a real gateway process, a browser, a live
server) lives here and is marked `e2e` (tests/e2e/conftest.py states the rule). `make test-fast` skips them."""
