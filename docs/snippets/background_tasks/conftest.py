import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import main


@pytest.fixture
def app() -> FastAPI:
    # tasks_recorder finds the app through this fixture name.
    main.users.clear()
    main.outbox.clear()
    main.audit_log.clear()
    return main.app


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)
