"""A DICOM application entity on the network, as a user writes it: ``AET@HOST:PORT``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from medmap.errors import ConfigError


@dataclass(frozen=True)
class Peer:
    ae: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, option: str = "--destination") -> Peer:
        match = re.fullmatch(r"([^@]{1,16})@([^:]+):(\d+)", text)
        if not match or not 0 < int(match.group(3)) < 65536:
            raise ConfigError(f"{option} {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
        return cls(match.group(1), match.group(2), int(match.group(3)))

    def __str__(self) -> str:
        return f"{self.ae}@{self.host}:{self.port}"
