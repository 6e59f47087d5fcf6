from . import (
    test_config,
    test_duplicate_guard,
    test_failures,
    test_incoming,
    test_oauth,
    test_security,
    test_sending,
    test_tour,
    test_unattended,
)
