"""The DICOM node's settings: one model, one spelling and one default per setting.

The JSON file given to ``medmap serve --config`` and the command line's options use the same names (an
option ``--token-file`` is the key ``token_file``); the CLI only maps the options it was given onto this
model, over the file's values. Every check happens here, before the node starts: an unknown key, a
malformed destination, a precision or device this machine cannot run, an unreadable token file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from medmap.errors import ConfigError
from medmap.pacs.peer import Peer


@dataclass(config=ConfigDict(extra="forbid"))
class Route:
    """Which bundle processes a series: every given rule must match (regular expressions, case-insensitive).
    With ``classifier`` (a lesion classifier bundle) the route's detection bundle finds, then classifies:
    a chest CT route, for example ``{"bundle": "nodule-detector", "classifier": "nodule-classifier",
    "modality": "CT", "body_part": "CHEST|LUNG"}``."""

    bundle: Path
    classifier: Path | None = None
    modality: str = ""
    body_part: str = ""
    description: str = ""

    def accepts(self, modality: str, body_part: str, description: str) -> bool:
        rules = ((self.modality, modality), (self.body_part, body_part), (self.description, description))
        return all(not rule or re.fullmatch(rule, value or "", re.I) for rule, value in rules)


Destination = Peer  # where the node sends its results


class NodeSettings(BaseModel):
    """What ``medmap serve`` runs with (names as the options: ``--ae`` is ``ae``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path  # the node's folder: spool, results, job database, pseudonym key
    bundle: list[Path] = []  # bundles that each take the series of their own modality (--bundle, repeatable)
    routes: list[Route] = []  # explicit rules (JSON only), tried before the bundles' modality routes
    ae: str = "MEDMAP"
    port: int = 11112
    host: str = "127.0.0.1"
    destination: str | None = None  # AET@HOST:PORT, C-STORE of the results
    allow: list[str] = []  # calling AE titles allowed to associate; empty: any
    idle: float = 10.0  # seconds without a new instance after which a series is complete
    device: str = "cpu"
    precision: str = "auto"  # medmap.inference.precision
    overlays: bool = False  # also send Secondary Capture overlay images (viewers without SEG support)
    dicomweb: str | None = None  # results by STOW-RS to this DICOMweb root when no destination
    http: int | None = None  # port of the REST API and web page
    token_file: Path | None = None  # file holding the bearer token the HTTP API requires
    tls_cert: Path | None = None  # DICOM over TLS: this node's certificate (PEM) ...
    tls_key: Path | None = None  # ... and its private key
    tls_ca: Path | None = None  # when given, callers (and a TLS destination) must be signed by it
    destination_tls: bool = False  # send results over TLS

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        if value is not None:
            Destination.parse(value)
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        from medmap.inference.precision import PRECISIONS

        if value not in PRECISIONS:
            raise ValueError(f"--precision {value}: choose one of {', '.join(PRECISIONS)}")
        return value

    @property
    def destination_address(self) -> Destination | None:
        return Destination.parse(self.destination) if self.destination else None

    @property
    def token(self) -> str | None:
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {self.token_file}: cannot be read ({exc.strerror})") from None

    def all_routes(self) -> list[Route]:
        """The explicit routes, then one per bundle for the modality it was trained on."""
        from medmap.inference.bundle import load_bundle

        return [*self.routes, *(Route(b, modality=load_bundle(b).plan.modality or "") for b in self.bundle)]


def load_settings(path: str | Path | None, given: dict) -> NodeSettings:
    """The settings of a JSON file (or none), with the command line's ``given`` values on top (None: not
    given); refused in one line naming the setting."""
    settings: dict = {}
    where = "the node's settings"
    if path is not None:
        path, where = Path(path), str(path)
        try:
            settings = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: the settings must be a JSON object")
    settings.update({key: value for key, value in given.items() if value is not None})
    try:
        result = NodeSettings(**settings)
    except ValidationError as exc:
        raise ConfigError(_one_line(where, exc)) from None
    from medmap.device import check_device

    check_device(result.device)  # a node that cannot run its models does not start
    result.token  # an unreadable token file stops the start, not the first request  # noqa: B018
    return result


def _one_line(where: str, exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        if len(error["loc"]) == 1:
            known = ", ".join(NodeSettings.model_fields)
            return f"{where}: unknown setting {location!r}; known: {known}"
        return f"{where}: unknown rule {location!r} (a route has bundle, classifier, modality, body_part, description)"
    if error["type"] == "missing" and error["loc"] == ("data",):
        return "the node needs --data (a folder for its spool, results and job database)"
    if error["type"] == "missing":
        return f"{where}: {location} is required"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return f"{where}: {location}: {error['msg']}"
