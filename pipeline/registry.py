"""Loading a registered model: `models:/<name>@<alias>` (or `/<version>`) from an MLflow store.

`from_registry(uri, tracking_uri=...)` downloads the version's exported dir and hands it to
`OFASys.from_pretrained`; the ofasys library itself never imports MLflow. The store is always named by the
caller or MLFLOW_TRACKING_URI: a default relative to the working directory found a different, or a
new and empty, store depending on where the caller stood.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from ofasys.inference import REGISTRY_SCHEME, OFASys  # noqa: F401


class ModelNotFoundError(FileNotFoundError):
    """A `models:/` URI names a model, alias or version its MLflow store does not hold."""


_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))(?P<path>/.*)?")


def check_store(store: str, what: str) -> None:
    """Fail, creating nothing, when `store` names a local MLflow store that does not exist.

    MLflow opening a sqlite URI creates the file (and an empty database in it), so a mistyped or
    working-directory-relative path would otherwise answer "model not found" from a store made up
    on the spot. Remote stores (http, databricks, ...) are left to MLflow.
    """
    scheme = urlparse(store).scheme
    if scheme == "sqlite":
        rest = store[len("sqlite:"):]
        if not rest.startswith("///") or rest[3:].split("?")[0] in ("", ":memory:"):
            raise ValueError(f"{what}: the MLflow store {store!r} is not a sqlite file; give one like "
                             "'sqlite:////abs/path/mlflow.db'")
        path = Path(rest[3:].split("?")[0])
        kind = "file"
    elif scheme == "file" or (scheme == "" and not store.startswith("databricks")):
        path = Path(urlparse(store).path if scheme == "file" else store)
        kind = "directory"
    else:
        return
    resolved = path if path.is_absolute() else Path.cwd() / path
    relative = "" if path.is_absolute() else f" (a relative path is relative to the working directory {Path.cwd()})"
    found = resolved.is_file() if kind == "file" else resolved.is_dir()
    if not found:
        raise FileNotFoundError(f"{what}: the MLflow store {store!r} does not exist: no {kind} {resolved}"
                                f"{relative}")
    if kind == "file" and resolved.stat().st_size == 0:
        raise FileNotFoundError(f"{what}: the MLflow store {store!r} is an empty file ({resolved}), not an "
                                "MLflow database")


def resolve_registry_uri(uri: str, tracking_uri: str | None = None) -> Path:
    """Download `models:/<name>@<alias>` (or `models:/<name>/<version>`) to a local dir.

    The store is `tracking_uri`, else the MLFLOW_TRACKING_URI environment variable; there is no
    default, because a default relative to the working directory found a different (or a new,
    empty) store depending on where the caller stood. A missing store is an error that names
    where it was looked for, and nothing is created. MLflow is imported only here: the library
    itself does not depend on it.
    """
    store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not store:
        raise ValueError(f"{uri}: no MLflow store to look it up in: pass tracking_uri= (e.g. "
                         "'sqlite:////abs/path/mlflow.db') or set MLFLOW_TRACKING_URI")
    match = _MODELS_URI.fullmatch(uri)
    if match is None:
        raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    check_store(store, uri)

    import mlflow  # noqa: PLC0415 - optional, registry URIs only
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise ModelNotFoundError(f"{uri}: no registered model {name!r} in the MLflow store {store} "
                                 f"(it has: {', '.join(known) or 'none'})") from None
    if alias is not None:
        if alias not in model.aliases:
            raise ModelNotFoundError(f"{uri}: model {name!r} has no alias {alias!r} in the MLflow store {store} "
                                     f"(aliases: {', '.join(sorted(model.aliases)) or 'none'})")
        version = str(model.aliases[alias])
    try:
        source = client.get_model_version_download_uri(name, version)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ModelNotFoundError(f"{uri}: model {name!r} has no version {version} in the MLflow store {store}") from None
    if match["path"]:
        source = source.rstrip("/") + match["path"]
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=store))


def from_registry(uri: str, tracking_uri: str | None = None, device: str = "cpu") -> OFASys:
    """`OFASys.from_pretrained` on the exported dir a `models:/` URI names in the store `tracking_uri`
    (else MLFLOW_TRACKING_URI); see `resolve_registry_uri` for the errors."""
    return OFASys.from_pretrained(resolve_registry_uri(uri, tracking_uri), device=device)
