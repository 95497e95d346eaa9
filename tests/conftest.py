"""Fixtures shared by every test package.

* ``shared_dir`` — the ``shared/`` folder beside the repository (skips when absent).
* ``stac_fixtures_dir`` — real STAC item JSON from Planetary Computer / Earth Search.
* ``sample_catalog`` — the offline sample catalog (6 co-registered S1/S2 BigEarthNet
  patches, collections ``bigearthnet-s2`` and ``bigearthnet-s1``), built once per
  session into a temporary folder. Treat it as read-only (``.clone()`` to modify).
* ``sample_items`` — ``{"s2": [...], "s1": [...]}`` items of that catalog; the two lists
  are index-aligned pairs (``s1[i]`` covers ``s2[i]`` exactly).
* ``stac_api_url`` — a real STAC API (``rustac serve``) on 127.0.0.1 serving the sample
  catalog; started once per session, stopped at the end.
* ``client`` — a Dask ``LocalCluster`` of two single-threaded worker processes (the
  layout xcsmoe starts by default), one per test module; a module overrides it for
  another layout.
* ``threaded_client`` — one in-process worker with two threads (quick to start), one
  per test module.

Loading one pair into a cube::

    cube = xcsmoe.load_cube([sample_items["s2"][0]], [sample_items["s1"][0]])
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` relative to the repository root; skips the test when absent."""
    path = REPO.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"shared folder not found at {path}")
    return path


@pytest.fixture(scope="session")
def stac_fixtures_dir(shared_dir: Path) -> Path:
    """Folder of real STAC item JSON files (see its README); skips when absent."""
    path = shared_dir / "fixtures" / "stac"
    if not path.is_dir():
        pytest.skip(f"STAC fixtures not found at {path}")
    return path


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory: pytest.TempPathFactory) -> pystac.Catalog:
    """The sample catalog, built once per session (read-only)."""
    from xcsmoe.stac.sample_catalog import example_catalog

    return example_catalog(tmp_path_factory.mktemp("sample-catalog") / "catalog")


@pytest.fixture(scope="session")
def sample_items(sample_catalog: pystac.Catalog) -> dict[str, list[pystac.Item]]:
    """Index-aligned S2 and S1 items of the sample catalog (``s1[i]`` pairs ``s2[i]``)."""
    from xcsmoe.stac.sample_catalog import iter_pairs

    pairs = list(iter_pairs(sample_catalog))
    return {"s2": [s2 for s2, _ in pairs], "s1": [s1 for _, s1 in pairs]}


@pytest.fixture(scope="session")
def stac_api_url(sample_catalog: pystac.Catalog) -> Iterator[str]:
    """URL of a loopback STAC API serving the sample catalog (``rustac serve``)."""
    from xcsmoe.errors import ConfigError
    from xcsmoe.stac.serve import rustac_executable, serve_stac

    try:
        rustac_executable()
    except ConfigError as error:
        pytest.skip(str(error))
    with serve_stac(sample_catalog) as url:
        yield url


@pytest.fixture(scope="session")
def sample_set(sample_catalog):
    """The six sample pairs as an evaluation dataset (S1, S2 and their labels)."""
    from xcsmoe.evaluation.readers import read_sample_catalog

    return read_sample_catalog(sample_catalog)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, as ``regionstore.connect`` starts them."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def threaded_client():
    """A one-worker, two-thread in-process Dask cluster (quick to start) for store jobs."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
