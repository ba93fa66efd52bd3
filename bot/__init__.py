"""Relance's daemon and its I/O: config, store, ledger import, rendering, outbox, CLI, demo."""
