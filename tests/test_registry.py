"""Registry settings, pull-failure classification, Amazon ECR through moto's server (repository per
competition, lifecycle policy, login token), and intake when the registry is down."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import need

from referee.platform.core.errors import SpecError
from referee.platform.core.jobs import FailureReason
from referee.platform.runtime.registry import (
    Registry,
    RegistrySettings,
    classify_pull_error,
    dispatch_image,
    is_digest_ref,
    publish_image,
    settings_for,
)

pytestmark = pytest.mark.fleet


class Comp:
    def __init__(self, cid: str = "deepfake", registry: dict | None = None):
        self.id, self.registry, self.source_path = cid, registry, None


def test_settings_are_validated_and_named():
    s = RegistrySettings.from_mapping({"url": "https://registry.example.org:5000/team/", "username": "ci",
                                       "password_env": "REG_PW"}, where="c.yaml")
    assert s is not None and s.url == "registry.example.org:5000/team"
    assert Registry(s).repository("Deep Fake") == "registry.example.org:5000/team/referee-deep-fake"
    assert Registry(s).host == "registry.example.org:5000"
    assert RegistrySettings.from_mapping(None, where="c.yaml") is None
    for bad, field in [({"url": "r.example.org", "ecr": {}}, "registry"),
                       ({"password_env": "X", "url": "r.example.org"}, "registry"),
                       ({"url": "r.example.org", "colour": "blue"}, "registry.colour"),
                       ({"url": "user@r.example.org"}, "registry")]:
        with pytest.raises(SpecError) as exc:
            RegistrySettings.from_mapping(bad, where="c.yaml")
        assert field in str(exc.value) and "c.yaml" in str(exc.value)


def test_the_password_comes_from_the_environment_only(monkeypatch):
    s = RegistrySettings(url="r.example.org", username="ci", password_env="REG_PW")
    monkeypatch.delenv("REG_PW", raising=False)
    with pytest.raises(Exception, match="REG_PW"):
        Registry(s).auth_config()
    monkeypatch.setenv("REG_PW", "s3cret")
    assert Registry(s).auth_config() == {"username": "ci", "password": "s3cret", "serveraddress": "r.example.org"}
    assert Registry(RegistrySettings(url="r.example.org")).auth_config() is None  # the node's docker login


def test_workspace_registry_is_the_default_and_a_competition_overrides_it(tmp_path):
    assert settings_for(Comp(), tmp_path) is None
    (tmp_path / "registry.yaml").write_text("registry:\n  url: ws.example.org/ref\n")
    assert settings_for(Comp(), tmp_path).url == "ws.example.org/ref"
    assert settings_for(Comp(registry={"url": "own.example.org"}), tmp_path).url == "own.example.org"
    (tmp_path / "registry.yaml").write_text("registry:\n  url: ws.example.org\n  nonsense: 1\n")
    with pytest.raises(SpecError, match="registry.nonsense"):
        settings_for(Comp(), tmp_path)


@pytest.mark.parametrize("text, reason", [
    # the registry lost the image referee pushed, or never had it: the platform's
    ("manifest for 127.0.0.1:5000/r@sha256:00 not found: manifest unknown: manifest unknown", "platform_error"),
    (("pull access denied for r, repository does not exist or may require 'docker login': denied: requested "
      "access to the resource is denied"), "platform_error"),
    ("Head \"https://127.0.0.1:5000/v2/r/manifests/sha256:00\": no basic auth credentials", "platform_error"),
    ("unauthorized: authentication required", "platform_error"),
    ("Your authorization token has expired. Reauthenticate and try again.", "platform_error"),
    ("Get \"https://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused", "platform_error"),
    ("net/http: request canceled while waiting for connection (Client.Timeout exceeded)", "platform_error"),
    ("failed to register layer: Error processing tar file(exit status 1): write /x: no space left on device",
     "platform_error"),
    ("something nobody has seen before", "platform_error"),
    # the node's engine cannot unpack what the image holds: the team's
    ("failed to register layer: Error processing tar file(exit status 1): invalid argument", "image_invalid"),
    ("max depth exceeded", "image_invalid"),
])
def test_pull_failures_are_the_platforms_unless_the_image_content_is_at_fault(text, reason):
    assert classify_pull_error(text) is FailureReason(reason)


@pytest.mark.aws
def test_ecr_repository_per_competition_with_lifecycle_policy_and_login_token():
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        need(False, f"moto[server] ({exc})")
    from test_aws_batch import REGION, start_moto
    aws = start_moto()
    policy = {"rules": [{"rulePriority": 1, "description": "keep 50", "action": {"type": "expire"},
                         "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 50}}]}
    settings = RegistrySettings.model_validate({"ecr": {"region": REGION, "endpoint_url": aws.endpoint,
                                                        "repository_prefix": "fleet", "lifecycle_policy": policy}})
    reg = Registry(settings, session=aws.session)
    uri = reg.repository("Deep.Fake")
    ecr = aws.client("ecr")
    repo = ecr.describe_repositories(repositoryNames=["fleet/referee-deep.fake"])["repositories"][0]
    assert uri == repo["repositoryUri"] and uri.endswith("/fleet/referee-deep.fake")
    assert repo["imageTagMutability"] == "IMMUTABLE"  # a tag, once pushed, names one image
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    assert {"Key": "referee.competition", "Value": "Deep.Fake"} in tags
    got = ecr.get_lifecycle_policy(repositoryName="fleet/referee-deep.fake")
    assert json.loads(got["lifecyclePolicyText"]) == policy
    # another scheduler (a restart) finds the repository instead of creating a second one
    assert Registry(settings, session=aws.session).repository("Deep.Fake") == uri
    assert len([r for r in ecr.describe_repositories()["repositories"]
                if r["repositoryName"] == "fleet/referee-deep.fake"]) == 1
    # docker credentials come from get_authorization_token: user AWS, the token's password, the proxy host
    auth = reg.auth_config()
    token = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
    assert auth is not None and (auth["username"], auth["password"]) == (user, password) and user == "AWS"
    assert auth["serveraddress"] == token["proxyEndpoint"].removeprefix("https://")
    assert "://" not in auth["serveraddress"]
    # an ECR that cannot be reached is the platform's problem, named as such
    from referee.platform.cli.localfleet import free_port
    down = Registry(RegistrySettings.model_validate({"ecr": {"region": REGION,
                                                             "endpoint_url": f"http://127.0.0.1:{free_port()}"}}),
                    session=aws.session)
    with pytest.raises(Exception, match="ECR login failed") as exc:
        down.auth_config()
    assert getattr(exc.value, "reason", None) is FailureReason.PLATFORM_ERROR


@pytest.mark.docker
def test_a_push_that_fails_at_intake_is_noted_and_dispatch_falls_back(docker_client, base_image, store):
    from referee.platform.cli.localfleet import free_port
    comp = Comp(registry={"url": f"127.0.0.1:{free_port()}/none"})  # nobody listens there
    image_id = docker_client.api.inspect_image(base_image)["Id"]
    meta = publish_image(comp, {"image": image_id}, client=docker_client)
    assert "image_ref" not in meta and "connection refused" in meta["registry_error"].lower()
    assert publish_image(Comp(), {"image": image_id}) == {"image": image_id}  # no registry: nothing to do

    class Sub:
        id, metadata = 1, meta
    assert dispatch_image(Sub(), comp, store, image_id) == image_id  # the id: a node without it says so
    assert not is_digest_ref(image_id) and is_digest_ref("r.example.org/x@sha256:" + "a" * 64)
