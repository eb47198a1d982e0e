"""The Label Studio adapter of the review loop.

- :mod:`.convert`: labelling config, brush RLE <-> masks;
- :mod:`.client`: SDK connection, project bootstrap, task look-up by idempotency key;
- :mod:`.outbox`: persistent SQLite outbox + ledger (items, synced labels, counters);
- :mod:`.review`: queue a result for review (idempotent; outbox when Label Studio is down);
- :mod:`.sync`: finished annotations -> ``data/labels/`` with provenance.
"""
