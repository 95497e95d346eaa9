"""Provider configurations: which collection holds which sensor, and how its assets map.

One YAML file per provider lives in the repository's top-level ``catalogs/`` folder (the
source of truth). Each collection entry is odc-stac's ``stac_cfg`` (``assets`` with
``data_type``/``nodata``/``units``, ``aliases`` from cube band to asset key) plus a few
keys xcsmoe reads: ``sensor`` (``s1``/``s2``), ``units`` (``DN``, ``linear``, ``dB`` or
``amplitude``), ``scale``, ``usable`` and ``notes``.

An optional ``access`` mapping (per provider, or per collection to override it) says how
GDAL reaches the asset bucket (:class:`BucketAccess`): ``endpoint``, ``region``,
``requester_pays``, ``unsigned``, ``virtual_hosting``. Credentials are never written
there: GDAL and boto3 read them from the environment (``AWS_ACCESS_KEY_ID``, profiles).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from xcsmoe.errors import ConfigError, MissingBandError, UnknownCollectionError, expected
from xcsmoe.sensors import SENSORS, SensorSpec

__all__ = [
    "BucketAccess",
    "CollectionConfig",
    "ProviderConfig",
    "catalogs_dir",
    "collection_config",
    "list_providers",
    "provider_config",
]

_S1_UNITS = ("linear", "dB", "amplitude")


@dataclass(frozen=True)
class BucketAccess:
    """How GDAL reads assets at ``s3://`` (and bucket ``https://``) hrefs.

    Args:
        endpoint: URL of an S3-compatible service, e.g. ``"http://127.0.0.1:9000"``
            (GDAL ``AWS_S3_ENDPOINT``; ``http://`` also sets ``AWS_HTTPS=NO``).
        region: bucket region (``AWS_REGION``), e.g. ``"us-west-2"``.
        requester_pays: agree to pay for requester-pays buckets (``AWS_REQUEST_PAYER``).
        unsigned: anonymous requests for public buckets (``AWS_NO_SIGN_REQUEST``).
        virtual_hosting: ``bucket.host`` style URLs (GDAL ``AWS_VIRTUAL_HOSTING``);
            ``None`` means GDAL's default, or path style with a custom ``endpoint``.
    """

    endpoint: str | None = None
    region: str | None = None
    requester_pays: bool = False
    unsigned: bool = False
    virtual_hosting: bool | None = None

    def __post_init__(self) -> None:
        if self.endpoint is not None and (
            not isinstance(self.endpoint, str)
            or not self.endpoint.startswith(("http://", "https://"))
        ):
            raise ConfigError(
                expected("access.endpoint", "an http:// or https:// URL", self.endpoint)
            )
        for name in ("requester_pays", "unsigned"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(expected(f"access.{name}", "true or false", getattr(self, name)))
        if self.virtual_hosting is not None and not isinstance(self.virtual_hosting, bool):
            raise ConfigError(
                expected("access.virtual_hosting", "true, false or null", self.virtual_hosting)
            )

    @classmethod
    def parse(cls, value: Any, *, argument: str = "access") -> BucketAccess:
        """A :class:`BucketAccess` from itself, a mapping of its fields, or ``None``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = set(cls.__dataclass_fields__)
        if not isinstance(value, Mapping) or set(value) - known:
            raise ConfigError(
                expected(argument, f"a mapping with keys among {sorted(known)}", value)
            )
        return cls(**value)

    def updated(self, override: Any) -> BucketAccess:
        """These settings with the fields given in ``override`` (a mapping or
        :class:`BucketAccess`: its non-default fields) replaced."""
        if override is None:
            return self
        if isinstance(override, BucketAccess):
            changes = {
                k: v for k, v in vars(override).items()
                if v != BucketAccess.__dataclass_fields__[k].default
            }  # fmt: skip
        else:
            changes = dict(vars(BucketAccess.parse(override)))
            changes = {k: v for k, v in changes.items() if k in override}
        return BucketAccess(**{**vars(self), **changes})

    @property
    def configured(self) -> bool:
        return self != BucketAccess()

    def aws_session(self) -> dict[str, Any]:
        """Keyword arguments of ``rasterio.session.AWSSession`` (credentials come from
        the environment of the process that reads)."""
        session: dict[str, Any] = {"aws_unsigned": self.unsigned}
        if self.region:
            session["region_name"] = self.region
        if self.requester_pays:
            session["requester_pays"] = True
        if self.endpoint:
            session["endpoint_url"] = self.endpoint.split("://", 1)[1].rstrip("/")
        return session

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration options that are not part of the AWS session."""
        options: dict[str, str] = {}
        if self.endpoint and self.endpoint.startswith("http://"):
            options["AWS_HTTPS"] = "NO"
        hosting = self.virtual_hosting
        if hosting is None and self.endpoint:
            hosting = False
        if hosting is not None:
            options["AWS_VIRTUAL_HOSTING"] = "TRUE" if hosting else "FALSE"
        return options


@dataclass(frozen=True)
class CollectionConfig:
    """How one STAC collection maps onto a sensor spec."""

    id: str
    sensor: str
    units: str
    scale: float
    assets: Mapping[str, Mapping[str, Any]] = field(repr=False)
    aliases: Mapping[str, str] = field(repr=False)
    usable: bool = True
    notes: str = ""
    provider: str = ""
    access: BucketAccess = BucketAccess()

    @property
    def spec(self) -> SensorSpec:
        return SENSORS[self.sensor]

    def asset_key(self, band: str) -> str:
        """Asset key that holds cube band ``band``."""
        return self.aliases.get(band, band)

    def stac_cfg(self) -> dict[str, Any]:
        """This collection as an odc-stac ``stac_cfg`` entry."""
        return {
            "assets": {key: dict(value) for key, value in self.assets.items()},
            "aliases": dict(self.aliases),
        }

    def missing_bands(self, asset_keys: set[str], bands: tuple[str, ...]) -> list[str]:
        """Cube bands among ``bands`` whose asset is not in ``asset_keys``."""
        return [b for b in bands if self.asset_key(b) not in asset_keys]

    def check_usable(self) -> None:
        if not self.usable:
            raise ConfigError(
                expected(
                    "collection",
                    "a collection the model can use",
                    f"{self.provider}/{self.id}",
                    self.notes.strip(),
                )
            )


@dataclass(frozen=True)
class ProviderConfig:
    """One provider file: name, STAC API URL and collection configurations."""

    name: str
    url: str | None
    collections: Mapping[str, CollectionConfig]
    path: Path | None = None

    def collection(self, collection_id: str) -> CollectionConfig:
        try:
            return self.collections[collection_id]
        except KeyError:
            raise UnknownCollectionError(
                expected(
                    "collection",
                    f"one of {sorted(self.collections)} for provider {self.name!r}",
                    collection_id,
                )
            ) from None

    def stac_cfg(self) -> dict[str, Any]:
        """All collections as one odc-stac ``stac_cfg``."""
        return {cid: c.stac_cfg() for cid, c in self.collections.items()}


def catalogs_dir() -> Path:
    """Folder of the provider YAML files.

    ``$XCSMOE_CATALOGS`` if set, else ``catalogs/`` beside the package (editable install
    or source checkout), else a copy shipped inside the package.
    """
    env = os.environ.get("XCSMOE_CATALOGS")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here.parents[1] / "catalogs", here.parent / "catalogs"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    raise ConfigError(
        expected(
            "catalogs folder",
            "a folder of provider YAML files",
            [str(c) for c in candidates],
            "Set XCSMOE_CATALOGS to the repository's catalogs/ folder.",
        )
    )


def list_providers() -> list[str]:
    """Names of the shipped provider configurations."""
    return sorted(p.stem for p in catalogs_dir().glob("*.yaml"))


def provider_config(name: str | os.PathLike[str]) -> ProviderConfig:
    """Read provider ``name`` (e.g. ``"planetary-computer"``) or a YAML file path."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        path = catalogs_dir() / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(
                expected(
                    "provider",
                    f"one of {list_providers()} or a YAML file path",
                    str(name),
                )
            )
    return _read_provider(path.resolve())


@functools.lru_cache(maxsize=32)
def _read_provider(path: Path) -> ProviderConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(expected(str(path), "valid YAML", str(error))) from error
    if not isinstance(raw, dict) or not isinstance(raw.get("collections"), dict):
        raise ConfigError(expected(str(path), "a mapping with a 'collections' mapping", raw))
    name = str(raw.get("provider", path.stem))
    access = BucketAccess.parse(raw.get("access"), argument=f"{path}: access")
    collections = {
        cid: _collection(cid, body or {}, name, path, access)
        for cid, body in raw["collections"].items()
    }
    return ProviderConfig(name, raw.get("url"), MappingProxyType(collections), path)


def _collection(
    cid: str, body: Mapping[str, Any], provider: str, path: Path, access: BucketAccess
) -> CollectionConfig:
    sensor = body.get("sensor")
    if sensor not in SENSORS:
        raise ConfigError(expected(f"{path}: {cid}.sensor", f"one of {sorted(SENSORS)}", sensor))
    units = str(body.get("units", SENSORS[sensor].units))
    if sensor == "s1" and units not in _S1_UNITS:
        raise ConfigError(expected(f"{path}: {cid}.units", f"one of {_S1_UNITS}", units))
    return CollectionConfig(
        id=cid,
        sensor=sensor,
        units=units,
        scale=float(body.get("scale", SENSORS[sensor].scale)),
        assets=MappingProxyType(dict(body.get("assets") or {})),
        aliases=MappingProxyType(dict(body.get("aliases") or {})),
        usable=bool(body.get("usable", True)),
        notes=str(body.get("notes", "")),
        provider=provider,
        access=_collection_access(access, body.get("access"), f"{path}: {cid}.access"),
    )


def _collection_access(provider: BucketAccess, raw: Any, argument: str) -> BucketAccess:
    BucketAccess.parse(raw, argument=argument)  # validates names and values
    return provider.updated(raw)


def collection_config(
    collection_id: str | None,
    asset_keys: set[str],
    *,
    bands: tuple[str, ...] | None = None,
    provider: str | ProviderConfig | None = None,
) -> CollectionConfig:
    """Configuration for items of ``collection_id`` that carry ``asset_keys``.

    With ``provider`` given, that provider must know the collection. Otherwise every
    shipped provider is tried and the first whose asset keys fit wins (Planetary
    Computer and Earth Search both call their S2 collection ``sentinel-2-l2a``).
    """
    if isinstance(provider, ProviderConfig):
        providers = [provider]
    elif provider is not None:
        providers = [provider_config(provider)]
    else:
        providers = [provider_config(p) for p in list_providers()]
    candidates = [p.collections[collection_id] for p in providers if collection_id in p.collections]
    if not candidates:
        known = sorted({c for p in providers for c in p.collections})
        raise UnknownCollectionError(
            expected(
                "collection",
                f"one of {known}",
                collection_id,
                "Pass provider=<name or YAML path> with a configuration for it.",
            )
        )
    for config in candidates:
        wanted = config.spec.bands if bands is None else bands
        if not config.missing_bands(asset_keys, wanted):
            return config
    config = candidates[0]
    wanted = config.spec.bands if bands is None else bands
    missing = config.missing_bands(asset_keys, wanted)
    raise MissingBandError(
        expected(
            f"assets of a {collection_id!r} item",
            f"assets for bands {list(wanted)}",
            sorted(asset_keys),
            f"Missing: {missing}. Pick items that carry every band, or pass bands=[...].",
        )
    )
