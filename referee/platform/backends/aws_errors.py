"""AWS control-plane errors as referee sees them: which botocore errors mean "AWS does not answer now"
(throttling, timeouts, unreachable endpoints, 5xx, expired or refused credentials) and become one typed
``BackendUnavailable`` with what to fix, and how the clients are configured to fail fast.

Everything else a call raises (a bad parameter, a job definition Batch refuses) stays as it is: it is
about one job, not about the control plane.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from referee.platform.core.errors import BackendUnavailable

# Error codes AWS services use for throttling (botocore's standard retry mode lists the same family).
THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
})
TRANSIENT = frozenset({
    "RequestTimeout", "RequestTimeoutException", "InternalError", "InternalFailure", "InternalServerError",
    "ServiceUnavailable", "ServiceUnavailableException", "ServerException",  # Batch's 500
})
CREDENTIALS = frozenset({
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
    "UnrecognizedClientException", "SignatureDoesNotMatch", "AuthFailure", "InvalidSignatureException",
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedException",
})

HINT_THROTTLED = ("AWS is throttling referee's calls; referee slows down by itself, and if it lasts, lower "
                  "max_in_flight or raise backend.poll_interval")
HINT_NETWORK = "check the network path to the AWS endpoint (endpoint_url, region, proxy settings)"
HINT_CREDENTIALS = ("refresh or fix the AWS credentials referee uses (an expired session: `aws sso login` or a "
                    "new role session; a refused call: the IAM policy in the README)")


def client_config(connect_timeout: float = 5.0, read_timeout: float = 30.0, max_attempts: int = 3) -> Any:
    """botocore settings: short timeouts and a few quick retries, so an outage reaches referee's own
    back-off in seconds instead of blocking a poll for minutes."""
    from botocore.config import Config
    return Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                  retries={"mode": "standard", "max_attempts": max_attempts})


def as_unavailable(exc: BaseException, what: str) -> BackendUnavailable | None:
    """``exc`` as a ``BackendUnavailable`` when it is control-plane trouble, else None."""
    import botocore.exceptions as be

    if isinstance(exc, BackendUnavailable):
        return exc
    if isinstance(exc, be.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", ""))
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        message = f"{what}: AWS answered {code or status}: {err.get('Message', '')}".rstrip(": ")
        if code in THROTTLING or status == 429:
            retry_after = (exc.response.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("retry-after")
            return BackendUnavailable(message, hint=HINT_THROTTLED,
                                      retry_after=float(retry_after) if str(retry_after or "").isdigit() else None)
        if code in CREDENTIALS:
            return BackendUnavailable(message, hint=HINT_CREDENTIALS)
        if code in TRANSIENT or status >= 500:
            return BackendUnavailable(message, hint="AWS reported a fault of its own; referee retries")
        return None
    credential_errors = tuple(getattr(be, name) for name in (
        "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "TokenRetrievalError",
        "SSOTokenLoadError", "UnauthorizedSSOTokenError", "RefreshWithMFAUnsupportedError") if hasattr(be, name))
    if isinstance(exc, credential_errors):
        return BackendUnavailable(f"{what}: no usable AWS credentials ({type(exc).__name__}: {exc})",
                                  hint=HINT_CREDENTIALS)
    if isinstance(exc, (be.ConnectionError, be.HTTPClientError, ConnectionError, TimeoutError)):
        return BackendUnavailable(f"{what}: the AWS endpoint did not answer ({type(exc).__name__}: {exc})",
                                  hint=HINT_NETWORK)
    return None


@contextlib.contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Turn control-plane errors raised inside the block into ``BackendUnavailable``."""
    try:
        yield
    except BackendUnavailable:
        raise
    except Exception as exc:
        unavailable = as_unavailable(exc, what)
        if unavailable is None:
            raise
        raise unavailable from exc
