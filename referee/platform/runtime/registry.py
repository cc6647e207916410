"""Container registries: push a submission's image once, pull it by digest on every node that runs it.

A competition (or the workspace) names a registry under ``registry:``:

* a plain OCI registry: ``{url: registry.example.org:5000/referee, username: ci, password_env: REG_PW}``
  (the password is read from the environment variable, never written into a spec or a job);
* Amazon ECR: ``{ecr: {region: us-east-1, lifecycle_policy: {...}}}``: one repository per competition,
  created with boto3, login from ``get_authorization_token``.

After intake the image is pushed and recorded as ``repository@sha256:<manifest digest>`` next to its
image id (the two differ: the id hashes the image config, the digest the registry's manifest). Every
backend then runs the digest reference; a node pulls it before the first job that needs it, once
(a lock per reference and node), with the node's own Docker credentials (``docker login`` or a
credential helper), and a pull that fails is classified: the team's fault only when the node's engine
cannot unpack the image's content, the platform's when the registry cannot be reached, refuses
referee's credentials or no longer has the image. Without a registry nothing is pushed and jobs run the image id on
the one engine that has it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from referee.platform.core.errors import BackendError, SpecError
from referee.platform.core.jobs import FailureReason
from referee.platform.runtime.locks import file_lock

LOCK_DIR = Path(tempfile.gettempdir()) / "referee-pull-locks"
DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")
REGISTRY_FILE = "registry.yaml"  # workspace-wide default, used when a competition names no registry

# Every reference a node pulls is one referee pushed itself, of an image that intake already loaded and
# checked (OS, architecture, command) on the scheduler's engine. So a pull fails by the team's doing only
# when the node's engine cannot unpack what the image holds; a registry that cannot be reached, refuses
# referee's credentials, or no longer has the image (a lifecycle policy, a wiped store) is the platform's.
_IMAGE_CONTENT = ("failed to register layer", "max depth exceeded", "error processing tar file")
_PLATFORM_FIRST = ("no space left on device", "unauthorized", "authentication required", "no basic auth credentials",
                   "denied", "expired", "connection refused", "timeout", "no such host", "manifest unknown",
                   "blob unknown", "name unknown", "not found")


class RegistryError(BackendError):
    """A push or pull failed; ``reason`` says whose fault it is."""

    def __init__(self, message: str, reason: FailureReason = FailureReason.PLATFORM_ERROR):
        self.reason = reason
        super().__init__(message)


class EcrSettings(BaseModel):
    """Amazon ECR: one repository per competition (``<prefix>/<competition id>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = None
    endpoint_url: str | None = None  # moto's server in tests
    registry_id: str | None = None  # another account's registry
    repository_prefix: str = "referee"
    lifecycle_policy: dict[str, Any] | None = None  # ECR lifecycle policy document, applied on creation
    scan_on_push: bool = False


class RegistrySettings(BaseModel):
    """``registry:`` in a competition or the workspace's registry.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None  # host[:port][/namespace]; 127.0.0.1 registries may speak plain HTTP
    username: str | None = None
    password_env: str | None = None  # the environment variable holding the password or token
    ecr: EcrSettings | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "RegistrySettings":
        if (self.url is None) == (self.ecr is None):
            raise ValueError("give either url (an OCI registry) or ecr (Amazon ECR)")
        if self.url is not None:
            url = self.url.removeprefix("https://").removeprefix("http://").rstrip("/")
            if not url or " " in url or "@" in url:
                raise ValueError(f"url {self.url!r} must look like host[:port][/namespace]")
            object.__setattr__(self, "url", url)
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env needs a username")
        return self

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, *, where: str) -> "RegistrySettings | None":
        """Validate a ``registry:`` section (None when absent); a ``SpecError`` names each bad field."""
        if not data:
            return None
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = [(".".join(str(p) for p in ("registry", *e["loc"])),
                         e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
            raise SpecError(where, problems) from None


def settings_for(comp: Any, workspace: Path | None = None) -> RegistrySettings | None:
    """The competition's ``registry:``, else the workspace's ``registry.yaml``, else None (no registry)."""
    where = str(getattr(comp, "source_path", None) or getattr(comp, "id", "competition"))
    own = comp.section_data("registry") if hasattr(comp, "section_data") else getattr(comp, "registry", None)
    if own:
        return RegistrySettings.from_mapping(own, where=where)
    if workspace is not None and (Path(workspace) / REGISTRY_FILE).is_file():
        import yaml
        path = Path(workspace) / REGISTRY_FILE
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return RegistrySettings.from_mapping(doc.get("registry", doc), where=str(path))
    return None


class Registry:
    """Where a competition's images go, and the credentials to push them."""

    def __init__(self, settings: RegistrySettings, *, session: Any = None):
        self.settings = settings
        self._session = session
        self._ecr_uri: dict[str, str] = {}

    # -- names -------------------------------------------------------------------------------------
    def repository(self, competition_id: str) -> str:
        """The repository a competition's submissions are pushed to (host[:port]/path)."""
        if self.settings.ecr is not None:
            return self._ecr_repository(competition_id)
        assert self.settings.url is not None
        return f"{self.settings.url}/{_repo_name(competition_id)}"

    @property
    def host(self) -> str:
        url = self.settings.url or ""
        return url.split("/", 1)[0]

    # -- credentials -------------------------------------------------------------------------------
    def auth_config(self) -> dict[str, str] | None:
        """Credentials for docker push/pull, or None to use the engine client's own (docker login)."""
        s = self.settings
        if s.ecr is not None:
            return self._ecr_login()
        if s.username is None:
            return None
        password = os.environ.get(s.password_env or "", "")
        if s.password_env and not password:
            raise RegistryError(f"registry {s.url}: the environment variable {s.password_env} (the password) is "
                                "not set")
        return {"username": s.username, "password": password, "serveraddress": self.host}

    # -- ECR ---------------------------------------------------------------------------------------
    def _ecr(self) -> Any:
        import boto3
        ecr = self.settings.ecr
        assert ecr is not None
        session = self._session or boto3.session.Session(region_name=ecr.region)
        return session.client("ecr", **({"endpoint_url": ecr.endpoint_url} if ecr.endpoint_url else {}))

    def _ecr_repository(self, competition_id: str) -> str:
        """Create the competition's ECR repository if missing (with its lifecycle policy); its URI."""
        if competition_id in self._ecr_uri:
            return self._ecr_uri[competition_id]
        ecr = self.settings.ecr
        assert ecr is not None
        client = self._ecr()
        name = f"{ecr.repository_prefix.strip('/')}/{_repo_name(competition_id)}".strip("/")
        ids = {"registryId": ecr.registry_id} if ecr.registry_id else {}
        try:
            repo = client.describe_repositories(repositoryNames=[name], **ids)["repositories"][0]
        except client.exceptions.RepositoryNotFoundException:
            repo = client.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE",
                                            imageScanningConfiguration={"scanOnPush": ecr.scan_on_push},
                                            tags=[{"Key": "referee.competition", "Value": competition_id}],
                                            **ids)["repository"]
            if ecr.lifecycle_policy:
                import json
                client.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps(ecr.lifecycle_policy),
                                            **ids)
        uri = str(repo["repositoryUri"])
        self._ecr_uri[competition_id] = uri
        return uri

    def _ecr_login(self) -> dict[str, str]:
        """docker credentials from ``get_authorization_token`` (valid 12 hours)."""
        ecr = self.settings.ecr
        assert ecr is not None
        try:
            data = self._ecr().get_authorization_token(
                **({"registryIds": [ecr.registry_id]} if ecr.registry_id else {}))["authorizationData"][0]
        except Exception as exc:  # noqa: BLE001 - botocore's errors: credentials, network
            raise RegistryError(f"ECR login failed: {type(exc).__name__}: {exc}") from None
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        return {"username": user, "password": password,
                "serveraddress": str(data["proxyEndpoint"]).removeprefix("https://")}

    # -- push --------------------------------------------------------------------------------------
    def push(self, client: Any, image_id: str, competition_id: str, tag: str) -> str:
        """Push a local image as ``<repository>:<tag>``; returns ``<repository>@sha256:<digest>``."""
        repo = self.repository(competition_id)
        auth = self.auth_config()
        try:
            client.api.tag(image_id, repo, tag, force=True)
            digest, errors = None, []
            for chunk in client.api.push(repo, tag, stream=True, decode=True, auth_config=auth):
                if "error" in chunk:
                    errors.append(str(chunk.get("error")))
                aux = chunk.get("aux")
                if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                    digest = aux["Digest"]
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - docker's errors, requests' errors
            raise RegistryError(f"pushing {image_id[:19]} to {repo} failed: {type(exc).__name__}: {exc}") from None
        if errors or digest is None:
            raise RegistryError(f"pushing {image_id[:19]} to {repo} failed: {'; '.join(errors) or 'no digest'}")
        return f"{repo}@{digest}"


def _repo_name(competition_id: str) -> str:
    return "referee-" + re.sub(r"[^a-z0-9._-]", "-", competition_id.lower())


def is_digest_ref(image: str | None) -> bool:
    """Whether ``image`` names a registry image by digest (``repo@sha256:...``), as remote backends run it."""
    return bool(image) and DIGEST_REF.match(str(image)) is not None


def classify_pull_error(text: str) -> FailureReason:
    """The team's fault (IMAGE_INVALID) only when the node's engine cannot unpack the image's content;
    otherwise (the registry unreachable, referee's credentials refused or expired, the image gone from
    the registry, the node's disk full) the platform's: retried, never charged."""
    low = re.sub(r"sha256:[0-9a-f]+", "", text.lower())
    if any(s in low for s in _PLATFORM_FIRST):
        return FailureReason.PLATFORM_ERROR
    if any(s in low for s in _IMAGE_CONTENT):
        return FailureReason.IMAGE_INVALID
    return FailureReason.PLATFORM_ERROR


@contextlib.contextmanager
def _node_lock(ref: str) -> Iterator[None]:
    """One pull of a reference at a time on this node (several workers may want it at once)."""
    with file_lock(LOCK_DIR / (hashlib.sha256(ref.encode()).hexdigest()[:32] + ".lock")):
        yield


def ensure_image(client: Any, image: str, *, auth_config: dict[str, str] | None = None) -> bool:
    """Make ``image`` present on the engine: a digest reference is pulled once per node (True when this
    call pulled it). Anything else must already be there. Raises ``RegistryError`` with its reason."""
    import docker.errors

    def present() -> bool:
        try:
            client.api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    if present():
        return False
    m = DIGEST_REF.match(image)
    if m is None:
        raise RegistryError(f"image {image} is not on this Docker engine and names no registry digest "
                            "(configure a registry so that other machines can pull submissions)")
    with _node_lock(image):
        if present():  # another worker on this node pulled it meanwhile
            return False
        try:
            kw = {"auth_config": auth_config} if auth_config else {}
            for chunk in client.api.pull(m.group("repo"), tag=m.group("digest"), stream=True, decode=True, **kw):
                if "error" in chunk:
                    text = str(chunk["error"])
                    raise RegistryError(f"pulling {image} failed: {text}", classify_pull_error(text))
        except RegistryError:
            raise
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            raise RegistryError(f"pulling {image} failed: {text}", classify_pull_error(text)) from None
        except Exception as exc:  # noqa: BLE001 - the engine itself is unreachable
            raise RegistryError(f"pulling {image} failed: {type(exc).__name__}: {exc}") from None
        if not present():
            raise RegistryError(f"pulling {image} reported success but the engine does not have it")
        return True


def _push(comp: Any, image: str, settings: RegistrySettings, client: Any = None) -> str:
    from referee.platform.runtime.engine import docker_client
    tag = "sub-" + image.split(":")[-1][:12]  # image ids are unique; tags in the registry are immutable
    return Registry(settings).push(client or docker_client(), image, comp.id, tag)


def publish_image(comp: Any, metadata: dict[str, Any], *, workspace: Path | None = None,
                  client: Any = None) -> dict[str, Any]:
    """After intake: push a container submission to the competition's registry and return its metadata
    with ``image_ref`` (repository@digest) next to ``image`` (the id). Unchanged when there is no
    registry or no image. A push that fails is noted as ``registry_error``; dispatch tries again."""
    image = metadata.get("image")
    settings = settings_for(comp, workspace)
    if not image or settings is None:
        return metadata
    try:
        return {**metadata, "image_ref": _push(comp, str(image), settings, client)}
    except RegistryError as exc:
        return {**metadata, "registry_error": str(exc)}


def dispatch_image(sub: Any, comp: Any, store: Any, image: str | None) -> str | None:
    """The image a job runs: the registry digest (pushed now, and recorded, if intake could not), or the
    local image id when there is no registry. A push that fails falls back to the id: a node that lacks
    it reports a platform error (retried, not charged)."""
    settings = settings_for(comp, getattr(store, "root", None))
    if not image or settings is None:
        return image
    ref = sub.metadata.get("image_ref")
    if is_digest_ref(ref):
        return str(ref)
    try:
        ref = _push(comp, image, settings)
    except RegistryError:
        return image
    store.set_image_ref(sub.id, ref)
    return ref
