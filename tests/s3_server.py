"""A local S3-compatible server (moto) for tests and for trying the S3 storage path offline.

Why: `evolver_core.data.storage.Storage` must behave the same on ``s3://`` as on a local
directory, and that is only believable if it is tested against a real S3 wire protocol.
`LocalS3Server` runs moto's server in a background thread on 127.0.0.1 (a free port),
waits until it answers HTTP, and hands out the endpoint plus dummy credentials, as an
environment mapping (`env`) or as s3fs/pandas storage options (`storage_options`).
Nothing is printed (request logging is turned down to warnings); the credentials are
moto's dummies, never real ones.

All moto servers in one process share moto's in-memory state: use distinct bucket names.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from types import TracebackType

import s3fs
from moto.server import ThreadedMotoServer

_DUMMY_KEY = "testing"
_DUMMY_SECRET = "testing"
_REGION = "us-east-1"


def _wait_until_answers(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP reply means the server is up
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {url} within {timeout_s} s") from None
            time.sleep(0.05)


class LocalS3Server:
    """A moto S3 server on `host`:`port` (0: a free port), as a context manager::

        with LocalS3Server() as s3:
            os.environ.update(s3.env)  # dummy credentials + endpoint
            s3.create_bucket("bkt")
            storage = Storage("s3://bkt/prefix")
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, start_timeout_s: float = 10.0
    ) -> None:
        self._host = host
        self._port = port
        self._start_timeout_s = start_timeout_s
        self._server: ThreadedMotoServer | None = None
        self._endpoint_url: str | None = None

    def __repr__(self) -> str:
        return f"LocalS3Server(endpoint_url={self._endpoint_url!r})"

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("LocalS3Server is not running")
        return self._endpoint_url

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3/s3fs/`Storage` at this server."""
        return {
            "WEBEVOLVER_S3_ENDPOINT": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": _DUMMY_KEY,
            "AWS_SECRET_ACCESS_KEY": _DUMMY_SECRET,
            "AWS_DEFAULT_REGION": _REGION,
        }

    @property
    def storage_options(self) -> dict[str, object]:
        """s3fs keyword arguments (also pandas' `storage_options`) for this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": _DUMMY_KEY,
            "secret": _DUMMY_SECRET,
        }

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("LocalS3Server is already running")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request
        server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self._endpoint_url = f"http://{host}:{port}"
        try:
            _wait_until_answers(self._endpoint_url, self._start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None
        self._endpoint_url = None

    def create_bucket(self, name: str) -> str:
        """Create the bucket (if absent); returns ``s3://<name>``."""
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def __enter__(self) -> LocalS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
