"""DICOMweb client (PS3.18) on the standard library: QIDO-RS to search, WADO-RS to fetch, STOW-RS to store.

Why not a client library: three kinds of request, two with ``multipart/related`` bodies, is all medmap needs, and
``urllib`` + the ``email`` parser handle them without another dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

from pydicom.dataset import Dataset

from medmap.errors import InputNotFoundError, OutputError

DICOM = "application/dicom"


def _request(url: str, *, data: bytes | None = None, headers: dict, token: str | None, timeout: float):
    if token:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    return urllib.request.urlopen(request, timeout=timeout)


def wado_study(
    base: str, study_uid: str, out: str | Path, *, token: str | None = None, timeout: float = 120
) -> list[Path]:
    """Every instance of a study (WADO-RS ``GET {base}/studies/{uid}``), written as files under ``out``."""
    return wado(base, f"studies/{study_uid}", out, token=token, timeout=timeout)


def wado(base: str, resource: str, out: str | Path, *, token: str | None = None, timeout: float = 120) -> list[Path]:
    """Every instance of a WADO-RS resource (``studies/{uid}`` or ``studies/{uid}/series/{uid}``), written
    as ``out/instance-NNNNN.dcm`` in the order the server sent them."""
    out = Path(out)
    url = f"{base.rstrip('/')}/{resource}"
    accept = f'multipart/related; type="{DICOM}"; transfer-syntax=*'
    try:
        with _request(url, headers={"Accept": accept}, token=token, timeout=timeout) as response:
            content_type = response.headers["Content-Type"]
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise InputNotFoundError(f"{url}: WADO-RS answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputNotFoundError(f"{url}: cannot reach the DICOMweb server ({exc.reason})") from None
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(message.iter_parts()):
        path = out / f"instance-{i:05d}.dcm"
        path.write_bytes(part.get_payload(decode=True))
        paths.append(path)
    if not paths:
        raise InputNotFoundError(f"{url}: the {'series' if '/series/' in resource else 'study'} has no instances")
    return paths


def qido(
    base: str, resource: str, params: list[tuple[str, str]], *, token: str | None = None, timeout: float = 60
) -> list[Dataset]:
    """A QIDO-RS search (``GET {base}/{resource}?key=value...``; ``studies`` or ``studies/{uid}/series``),
    each match as a pydicom dataset (the DICOM JSON model read by pydicom)."""
    url = f"{base.rstrip('/')}/{resource}?{urllib.parse.urlencode(params)}"
    try:
        with _request(url, headers={"Accept": "application/dicom+json"}, token=token, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise InputNotFoundError(f"{url}: QIDO-RS answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputNotFoundError(f"{url}: cannot reach the DICOMweb server ({exc.reason})") from None
    if not body.strip():  # 204 No Content: nothing matched
        return []
    try:
        matches = json.loads(body)
    except json.JSONDecodeError:
        raise InputNotFoundError(f"{url}: QIDO-RS answered something that is not DICOM JSON") from None
    return [Dataset.from_json(match) for match in matches]


def stow(base: str, files: list[str | Path], *, token: str | None = None, timeout: float = 120) -> None:
    """Store instances with STOW-RS (``POST {base}/studies``); raises `OutputError` unless all are stored."""
    boundary = uuid.uuid4().hex
    chunks = []
    for path in files:
        chunks += [f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode(), Path(path).read_bytes(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    headers = {
        "Content-Type": f'multipart/related; type="{DICOM}"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    url = f"{base.rstrip('/')}/studies"
    try:
        with _request(url, data=b"".join(chunks), headers=headers, token=token, timeout=timeout) as response:
            response.read()
            if response.status != 200:  # 202: some instances were refused
                raise OutputError(f"{url}: STOW-RS stored only part of {len(files)} instance(s) ({response.status})")
    except urllib.error.HTTPError as exc:
        raise OutputError(f"{url}: STOW-RS answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise OutputError(f"{url}: cannot reach the DICOMweb server ({exc.reason})") from None
