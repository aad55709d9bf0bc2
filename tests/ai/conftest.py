"""The AI API tests' stack: the web app on a fresh database and a tracer whose entries the test ingests."""

from __future__ import annotations

import pytest

from collector_worker import pricing
from collector_worker.storage import open_engine
from tests.ai.pipeline import CapturingManager
from web.settings import WebSettings


@pytest.fixture
def stack(database_url, redis_url, data_dir):
    pricing.set_price_table(None)
    engine = open_engine(database_url)
    from web import create_app

    app = create_app(settings=WebSettings.load(env={}, database_url=database_url, data_dir=str(data_dir),
                                               redis_url=redis_url))
    capturing = CapturingManager("agent-svc", redis_url, data_dir)
    yield engine, app.test_client(), capturing
    capturing.close()
    engine.dispose()
