import pytest
from tiny_models import shared_start_family


@pytest.fixture
def family():
    return shared_start_family(3)
