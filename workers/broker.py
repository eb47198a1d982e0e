"""The embedded broker's transport: kombu's SQLAlchemy transport on the SQLite file, polled
every :data:`POLL_S` instead of kombu's 1 s.

kombu's virtual transports sleep ``polling_interval`` whenever the queue is empty, so a task
sent to an idle worker waited up to 1 s (0.5 s on average) before it started; measured
(README, "Speed"), one cached-support query through the embedded stack took 0.98 s with kombu's
poll and 0.33 s with this one (0.24 s for the same job in-process). The option cannot be set
through ``broker_transport_options`` here: the SQLAlchemy channel hands every option it does
not know to ``sqlalchemy.create_engine``, which refuses it.
So the worker consumes through this subclass, named as Celery's ``broker_transport`` (an import
path is accepted there, never in a URL's scheme; :func:`consumer_settings`); everything else
(tables, messages, visibility) is kombu's own.
"""

from __future__ import annotations

from kombu.transport import sqlalchemy

#: seconds between two looks at an empty queue (a ``SELECT`` on the broker file)
POLL_S = 0.05
#: this class as kombu imports it
TRANSPORT = "workers.broker:Transport"


class Transport(sqlalchemy.Transport):
    """kombu's SQLAlchemy transport with a short poll of empty queues."""

    polling_interval = POLL_S


def consumer_settings(broker: str) -> dict[str, str]:
    """Celery's ``broker_url`` (and ``broker_transport``) for a worker consuming ``broker``:
    the embedded ``sqla+sqlite:///`` broker through :class:`Transport`, any other as it is."""
    if broker.startswith("sqla+sqlite:///"):
        return {"broker_url": broker[len("sqla+") :], "broker_transport": TRANSPORT}
    return {"broker_url": broker}
