"""The CLI's way to a running facefind service: search and verify over its HTTP API.

A one-off `facefind search` has to load the models and open the library (at a million faces,
seconds); a running service (`facefind serve`) holds both. When one is configured
(``--service URL`` or $FACEFIND_SERVICE, with an API key in $FACEFIND_API_KEY) the CLI uploads the
probe to it and prints the answer as if it had searched itself. Like the other faces, this
module calls the library API only through the service; the service audits the search under the
key's user. Errors come back as the service's problem details and are raised as the
FaceFindError (same reason code) a local search would have raised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from facefind.access import Purpose
from facefind.errors import FaceFindError
from facefind.files import path_to_text, read_probe
from facefind.schema import SearchResponse, VerifyResponse

if TYPE_CHECKING:  # httpx is imported by the request: the CLI imports this module for every search, local too
    import httpx

SERVICE_ENV = "FACEFIND_SERVICE"
API_KEY_ENV = "FACEFIND_API_KEY"
UPLOAD_NAME = "the probe image"  # how the service names an uploaded probe in its messages
TIMEOUT_S = 120.0  # a search of a large probe on a busy service can take a while; a dead one is refused at once


class ServiceClient:
    """Search and verify through the service at ``url`` (``http://127.0.0.1:8000``), as the key's user."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout_s = timeout_s

    def search(
        self, probe: Path, face: int | None = None, top_k: int = 10, max_fmr: float | None = None,
        show_all: bool = False, within: Path | None = None, *, purpose: Purpose,
    ) -> SearchResponse:
        """As :meth:`facefind.api.FaceFind.search`; the probe file is read here and uploaded."""
        form = {"face": face, "top_k": top_k, "max_fmr": max_fmr, "show_all": show_all,
                "in": path_to_text(Path(os.path.abspath(within))) if within is not None else None,
                "case": purpose.case, "reason": purpose.reason}
        files = {"file": (probe.name, read_probe(probe), "application/octet-stream")}
        result = self._post("/api/v1/search", form, files, SearchResponse, {UPLOAD_NAME: path_to_text(probe)})
        return result.model_copy(update={"probe_path": path_to_text(probe.resolve())})  # the service saw an upload

    def search_face(
        self, face_id: int, top_k: int = 10, max_fmr: float | None = None, show_all: bool = False,
        within: Path | None = None, *, purpose: Purpose,
    ) -> SearchResponse:
        """As :meth:`facefind.api.FaceFind.search_face`: nothing is uploaded, the service reads the stored face."""
        form = {"face_id": face_id, "top_k": top_k, "max_fmr": max_fmr, "show_all": show_all,
                "in": path_to_text(Path(os.path.abspath(within))) if within is not None else None,
                "case": purpose.case, "reason": purpose.reason}
        return self._post("/api/v1/search", form, {}, SearchResponse, {})

    def verify(
        self, a: Path, b: Path, face_a: int | None = None, face_b: int | None = None, max_fmr: float | None = None,
        *, purpose: Purpose,
    ) -> VerifyResponse:
        """As :meth:`facefind.api.FaceFind.verify`; both files are read here and uploaded."""
        form = {"face_a": face_a, "face_b": face_b, "max_fmr": max_fmr, "case": purpose.case, "reason": purpose.reason}
        files = {"a": (a.name, read_probe(a), "application/octet-stream"),
                 "b": (b.name, read_probe(b), "application/octet-stream")}
        return self._post("/api/v1/verify", form, files, VerifyResponse, {})

    def _post(self, endpoint: str, form: dict, files: dict, answer: type[BaseModel], names: dict[str, str]):
        """POST a form with files; the parsed answer, or the service's problem as a FaceFindError.

        ``names`` turns the service's words for an upload back into the file the user gave, so a
        message reads as the local one would ("no face found in probe.jpg").
        """
        import httpx

        data = {key: str(value).lower() if isinstance(value, bool) else str(value)
                for key, value in form.items() if value is not None}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s) as http:
                response = http.post(endpoint, data=data, files=files)
        except httpx.TimeoutException:
            raise FaceFindError(f"the facefind service at {self.url} did not answer within {self.timeout_s:g} s",
                                reason="service_unreachable") from None
        except httpx.TransportError as error:
            raise FaceFindError(
                f"cannot reach the facefind service at {self.url} ({error or type(error).__name__}): start it with"
                f" `facefind serve`, or unset {SERVICE_ENV} (or drop --service) to search the library directly",
                reason="service_unreachable",
            ) from None
        if response.is_success:
            try:
                return answer.model_validate(response.json())
            except (ValueError, ValidationError):
                raise FaceFindError(f"{self.url} did not answer like a facefind service (HTTP {response.status_code})",
                                    reason="service_error") from None
        raise self._problem(response, names)

    def _problem(self, response: httpx.Response, names: dict[str, str]) -> FaceFindError:
        try:
            problem = response.json()
            detail, reason = str(problem["detail"]), str(problem["reason"])
        except (ValueError, KeyError, TypeError):
            return FaceFindError(f"the facefind service at {self.url} answered HTTP {response.status_code}",
                                 reason="service_error")
        for said, meant in names.items():
            detail = detail.replace(said, meant)
        if reason == "unauthenticated" and not self.api_key:
            detail += f" (set {API_KEY_ENV} to a key made with `facefind keys create`)"
        return FaceFindError(detail, reason=reason)
