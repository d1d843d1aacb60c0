"""The researchers' (and operator's) Python client of the coordinator's REST API.

Example::

    from coordinator.client import CoordinatorClient

    with CoordinatorClient("https://coordinator:8750", token) as c:
        job = c.submit(spec_dict)
        job = c.wait(job.id, on_update=print)
        c.download(job.id, Path("results"))

Every error the API returns becomes a :class:`CoordinatorAPIError` carrying the status,
the error code and the field named by the coordinator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from coordinator.schemas import (
    EpsilonByNode,
    NodeCreate,
    NodePublic,
    OrganisationPublic,
    PrincipalCreate,
    PrincipalCreated,
    PrincipalPublic,
    ResultPublic,
    Role,
    SupernodeKeyCreate,
    SupernodeKeyPublic,
    TokenIssued,
    TokenPublic,
)
from federation.api_client import read_refusal
from federation.api_models import (
    TERMINAL_STATES,
    ApprovalPublic,
    JobEventPublic,
    JobPublic,
    ReleaseDecisionPublic,
)

__all__ = ["CoordinatorAPIError", "CoordinatorClient"]


class CoordinatorAPIError(Exception):
    """The coordinator refused a call (or could not be reached: ``status`` 0).

    Attributes:
        status: the HTTP status (0: no answer).
        code: the coordinator's error code (``forbidden``, ``invalid_spec``, ...).
        field: the field concerned, if the coordinator named one.
        message: one line for people.
    """

    def __init__(
        self, status: int, message: str, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.field = status, message, code, field


def _error(resp: httpx.Response) -> CoordinatorAPIError:
    """Return the coordinator's error answer ``resp`` as a :class:`CoordinatorAPIError`."""
    refusal = read_refusal(resp)
    return CoordinatorAPIError(refusal.status, refusal.message, refusal.code, refusal.field)


class CoordinatorClient:
    """A typed client of the coordinator.

    Args:
        url: the coordinator's base URL.
        token: the caller's API token.
        client: an ``httpx.Client`` to use instead (tests pass one bound to the app).
        timeout: seconds per request.
        ca_file: a CA bundle to verify the coordinator's certificate.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        ca_file: Path | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if client is None:
            verify: Any = str(ca_file) if ca_file else True
            client = httpx.Client(base_url=url, headers=headers, timeout=timeout, verify=verify)
        else:
            client.headers.update(headers)
        self.http = client

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CoordinatorAPIError(
                0, f"cannot reach the coordinator: {type(exc).__name__}"
            ) from None
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    # -- researchers ---------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> JobPublic:
        """Submit a job spec (a mapping, e.g. the parsed TOML file)."""
        return JobPublic.model_validate(self._call("POST", "/jobs", json={"spec": spec}).json())

    def status(self, job_id: str) -> JobPublic:
        """Return a job's status."""
        return JobPublic.model_validate(self._call("GET", f"/jobs/{job_id}").json())

    def jobs(self, state: str | None = None) -> list[JobPublic]:
        """Return the caller's jobs (all jobs for auditors and the operator)."""
        params = {"state": state} if state else {}
        return [
            JobPublic.model_validate(j) for j in self._call("GET", "/jobs", params=params).json()
        ]

    def events(self, job_id: str) -> list[JobEventPublic]:
        """Return a job's history."""
        return [
            JobEventPublic.model_validate(e)
            for e in self._call("GET", f"/jobs/{job_id}/events").json()
        ]

    def result(self, job_id: str) -> ResultPublic:
        """Return a finished job's result.

        Raises:
            CoordinatorAPIError: status 409, code ``result_held``, while the nodes' release
                review holds it (or after a node withheld it; the message gives the reason).
        """
        return ResultPublic.model_validate(self._call("GET", f"/jobs/{job_id}/result").json())

    def plot(self, job_id: str) -> bytes:
        """Return a finished job's plot (PNG bytes)."""
        return self._call("GET", f"/jobs/{job_id}/result/plot.png").content

    def cancel(self, job_id: str) -> JobPublic:
        """Cancel a job."""
        return JobPublic.model_validate(self._call("POST", f"/jobs/{job_id}/cancel").json())

    def wait(
        self,
        job_id: str,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[JobPublic], None] | None = None,
    ) -> JobPublic:
        """Poll a job until it ends; call ``on_update`` whenever its state or round changes.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[str, int] | None = None
        while True:
            job = self.status(job_id)
            if on_update is not None and (job.state, job.round) != seen:
                on_update(job)
            seen = (job.state, job.round)
            if job.state in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(poll)

    def download(self, job_id: str, out: Path) -> list[Path]:
        """Write a job's ``result.json``, ``model.json`` and ``plot.png`` (those it has) to ``out``.

        Returns:
            The files written.
        """
        result = self.result(job_id)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "result.json"]
        written[0].write_text(
            json.dumps(result.model_dump(mode="json"), indent=2), encoding="utf-8"
        )
        if result.model is not None:
            written.append(out / "model.json")
            written[-1].write_text(json.dumps(result.model, indent=2), encoding="utf-8")
        if result.has_plot:
            written.append(out / "plot.png")
            written[-1].write_bytes(self.plot(job_id))
        return written

    # -- operator and auditors -------------------------------------------------------------------
    def me(self) -> PrincipalPublic:
        """Return the caller's principal."""
        return PrincipalPublic.model_validate(self._call("GET", "/me").json())

    def create_principal(
        self,
        name: str,
        role: Role | str,
        node: str | None = None,
        organisation: str | None = None,
    ) -> PrincipalCreated:
        """Register a principal (a researcher: of a registered ``organisation``).

        The returned token is shown only this once.

        Raises:
            pydantic.ValidationError: ``role`` is not a :class:`~coordinator.schemas.Role`,
                or ``node`` / ``organisation`` does not fit it.
            CoordinatorAPIError: the coordinator refused.
        """
        body = PrincipalCreate.model_validate(
            {"name": name, "role": role, "node": node, "organisation": organisation}
        )
        return PrincipalCreated.model_validate(
            self._call("POST", "/principals", json=body.model_dump(mode="json")).json()
        )

    def register_organisation(
        self, name: str, type_: str, projects: dict[str, bool]
    ) -> OrganisationPublic:
        """Register an organisation, its type and its projects (name -> commercial).

        Raises:
            CoordinatorAPIError: refused (not an operator, a name taken, a bad field named).
        """
        body = {
            "name": name,
            "type": type_,
            "projects": [{"name": n, "commercial": c} for n, c in projects.items()],
        }
        return OrganisationPublic.model_validate(
            self._call("POST", "/organisations", json=body).json()
        )

    def issue_token(self, principal_id: str) -> TokenIssued:
        """Issue another token for a principal."""
        return TokenIssued.model_validate(
            self._call("POST", f"/principals/{principal_id}/tokens").json()
        )

    def revoke_token(self, prefix: str) -> TokenPublic:
        """Revoke a token by its prefix."""
        return TokenPublic.model_validate(self._call("DELETE", f"/tokens/{prefix}").json())

    def register_node(self, name: str, **caps: Any) -> NodePublic:
        """Register a node (caps: ``max_epsilon_per_job``, ``domains``, ...)."""
        body = NodeCreate(name=name, **caps)
        return NodePublic.model_validate(
            self._call("POST", "/nodes", json=body.model_dump(mode="json")).json()
        )

    def issue_service_token(self, name: str) -> TokenIssued:
        """Issue node ``name``'s service a new token; its earlier service tokens stop working.

        Raises:
            CoordinatorAPIError: refused (not an operator, no such node).
        """
        return TokenIssued.model_validate(self._call("POST", f"/nodes/{name}/service-token").json())

    def register_supernode_key(self, name: str, public_key: str) -> SupernodeKeyPublic:
        """Register node ``name``'s SuperNode public key (OpenSSH text) with the SuperLink.

        Raises:
            CoordinatorAPIError: refused (not an operator, no SuperLink, bad key, taken).
        """
        body = SupernodeKeyCreate(public_key=public_key)
        return SupernodeKeyPublic.model_validate(
            self._call("POST", f"/nodes/{name}/supernode-key", json=body.model_dump()).json()
        )

    def nodes(self) -> list[NodePublic]:
        """Return the registered nodes."""
        return [NodePublic.model_validate(n) for n in self._call("GET", "/nodes").json()]

    def approvals(self, job_id: str | None = None) -> list[ApprovalPublic]:
        """Return approvals (auditors, operator)."""
        params = {"job_id": job_id} if job_id else {}
        return [
            ApprovalPublic.model_validate(a)
            for a in self._call("GET", "/audit/approvals", params=params).json()
        ]

    def release_decisions(self, job_id: str | None = None) -> list[ReleaseDecisionPublic]:
        """Return the node reviewers' release decisions on held results (auditors, operator)."""
        params = {"job_id": job_id} if job_id else {}
        return [
            ReleaseDecisionPublic.model_validate(d)
            for d in self._call("GET", "/audit/releases", params=params).json()
        ]

    def epsilon_by_node(self) -> list[EpsilonByNode]:
        """Return ε spent per node (auditors, operator)."""
        return [EpsilonByNode.model_validate(e) for e in self._call("GET", "/audit/epsilon").json()]
