"""Channel secrets from SSM SecureStrings through Powertools, against a moto server."""

from __future__ import annotations

import logging
import uuid

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from botocore.config import Config

from chalicelib.notify import NotifyError
from chalicelib.notify.secrets import get_secure_parameter, load_channel_secrets
from chalicelib.settings import load_settings
from tests.support.moto_server import REGION

SLACK_URL = "https://hooks.slack.com/services/T1/B1/sl4ckS3cretValue"
PD_KEY = "pdS3cretRout1ngKey000000000000ab"


@pytest.fixture
def ssm(moto_server):
    client = boto3.client(
        "ssm",
        endpoint_url=moto_server.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )
    prefix = f"/doorman/{uuid.uuid4().hex[:8]}"
    client.put_parameter(Name=f"{prefix}/slack", Value=SLACK_URL, Type="SecureString")
    client.put_parameter(Name=f"{prefix}/pagerduty", Value=PD_KEY, Type="SecureString")
    try:
        yield client, prefix
    finally:
        client.close()


def test_secrets_are_read_decrypted_from_parameter_names_in_settings(ssm, caplog):
    client, prefix = ssm
    settings = load_settings(
        environ={
            "DOORMAN_SLACK_URL_PARAM": f"{prefix}/slack",
            "DOORMAN_PAGERDUTY_KEY_PARAM": f"{prefix}/pagerduty",
        }
    )
    provider = parameters.SSMProvider(boto3_client=client)
    # Doorman's own logs (botocore's DEBUG logs print response bodies: keep it above DEBUG).
    caplog.set_level(logging.DEBUG, logger="doorman")
    secrets = load_channel_secrets(
        settings.slack_url_param, settings.pagerduty_key_param, provider=provider
    )
    assert secrets.slack_webhook_url == SLACK_URL
    assert secrets.pagerduty_routing_key == PD_KEY
    assert "sl4ck" not in repr(secrets) and PD_KEY not in repr(secrets)
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("doorman"))
    assert "sl4ck" not in ours and PD_KEY not in ours


def test_default_provider_honours_aws_endpoint_url(ssm, monkeypatch):
    client, prefix = ssm
    monkeypatch.setenv("AWS_ENDPOINT_URL", client.meta.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setitem(parameters.base.DEFAULT_PROVIDERS, "ssm", parameters.SSMProvider())
    assert get_secure_parameter(f"{prefix}/slack") == SLACK_URL


def test_a_missing_parameter_is_named_without_any_value(ssm):
    client, prefix = ssm
    with pytest.raises(NotifyError) as info:
        get_secure_parameter(
            f"{prefix}/missing", provider=parameters.SSMProvider(boto3_client=client)
        )
    assert f"{prefix}/missing" in str(info.value)
    assert info.value.permanent is False


def test_unset_parameters_mean_unconfigured_channels():
    secrets = load_channel_secrets(None, None)
    assert secrets.slack_webhook_url is None and secrets.pagerduty_routing_key is None
