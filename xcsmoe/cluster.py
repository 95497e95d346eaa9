"""The Dask cluster a store-writing job runs on: argument checks, connecting (or starting a
``LocalCluster``), running tasks with a progress bar, and checking that every worker can
reach the store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from xcsmoe.errors import ConfigError, expected
from xcsmoe.storage import StoreLocation

__all__ = ["CONNECT_TIMEOUT_S", "check_cluster_args", "check_workers_reach", "connect", "run_tasks"]

CONNECT_TIMEOUT_S = 5.0


def check_cluster_args(client: Any, n_workers: Any) -> None:
    """Validate ``client`` / ``n_workers`` without connecting (for early checks)."""
    from distributed import Client

    if client is not None and not isinstance(client, (str, Client)):
        raise ConfigError(
            expected(
                "client",
                "None, a scheduler address (str) or a distributed.Client",
                type(client).__name__,
            )
        )
    if client is None and (
        isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer))
    ):
        raise ConfigError(expected("n_workers", "a positive integer", n_workers))
    if client is None and n_workers < 1:
        raise ConfigError(
            expected("n_workers", "a positive integer", n_workers, "Pass n_workers=1 or more.")
        )


@contextmanager
def connect(
    client: Any = None, *, n_workers: int = 2, timeout: float = CONNECT_TIMEOUT_S
) -> Iterator[Any]:
    """A ``distributed.Client``: ``client`` itself, one connected to the scheduler address
    ``client`` (refused within ``timeout`` seconds when unreachable), or one of a new
    ``LocalCluster`` of ``n_workers`` single-threaded processes. Closes what it opened.

    One single-threaded process per core is the layout measured fastest for model
    inference on a 2-core CPU (csmoe_p16, 24 windows: 2 workers × 1 thread about 1.9×
    faster than 1 worker × 2 threads; ``benchmarks/embed.py --only layouts`` compares the
    layouts); each process holds its own copy of the model."""
    from distributed import Client, LocalCluster

    check_cluster_args(client, n_workers)
    if isinstance(client, Client):
        yield client
        return
    if isinstance(client, str):
        try:
            own = Client(client, timeout=timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as error:
            raise ConfigError(
                expected(
                    "client",
                    f"a Dask scheduler address that answers within {timeout:g} s",
                    client,
                    f"Start the scheduler or fix the address ({type(error).__name__}).",
                )
            ) from error
        with own:
            yield own
        return
    with (
        LocalCluster(
            n_workers=int(n_workers), threads_per_worker=1, processes=True,
            dashboard_address=":0", scheduler_kwargs={"dashboard": False},  # any free port
        ) as cluster,
        Client(cluster) as own,
    ):  # fmt: skip
        yield own


def run_tasks(tasks: Sequence[Any], client: Any, *, desc: str, progress: bool = True) -> None:
    """Compute dask-delayed ``tasks`` on ``client`` with a progress bar; the first failure
    cancels the rest and is raised."""
    from distributed import as_completed

    futures = client.compute(list(tasks))
    bar = tqdm(total=len(futures), desc=desc, unit="region", disable=not progress)
    try:
        for future in as_completed(futures):
            future.result()
            bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()


def check_workers_reach(location: StoreLocation, client: Any) -> None:
    """Refuse a ``memory://`` store for workers in other processes (each would write
    to its own memory); ``client`` is ``None`` (a new process cluster) or a Client."""
    if location.protocol != "memory":
        return
    if client is None or isinstance(client, str):
        far = True
    else:
        workers = client.scheduler_info().get("workers", {})
        far = any(not str(address).startswith("inproc://") for address in workers)
    if far:
        raise ConfigError(
            expected(
                "store",
                "a location every worker can reach",
                location.url,
                "memory:// lives in one process: use a cluster with processes=False, or "
                "an s3://, gs://, az:// URL or a shared path.",
            )
        )
