"""A real S3 API for the object-store tests: moto's server on 127.0.0.1, as s3fs's own test suite runs it.

The endpoint and dummy credentials go into the environment when the test session starts (before any Dask
worker or CLI subprocess exists), so every process reaches the server through botocore's usual variables
(``AWS_ENDPOINT_URL``...), as a user's would reach their store. The server itself starts on first use; each
test gets a bucket of its own.
"""

import os
import socket
import uuid

import pytest

with socket.socket() as _s:
    _s.bind(("127.0.0.1", 0))
    PORT = _s.getsockname()[1]
ENDPOINT = f"http://127.0.0.1:{PORT}"
SECRET = "simshard-test-secret-never-logged"
os.environ.update(AWS_ACCESS_KEY_ID="simshard-test", AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                  AWS_ENDPOINT_URL=ENDPOINT)


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=PORT, verbose=False)
    server.start()
    yield ENDPOINT
    server.stop()


@pytest.fixture
def bucket(s3_server) -> str:
    """``s3://<a new bucket>`` on the moto server."""
    import boto3

    name = f"simshard-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


def s3fs():
    import fsspec

    return fsspec.filesystem("s3")
