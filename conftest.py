"""Settings of the whole test session (tests/ and e2e/)."""

from __future__ import annotations

import os

# The network rule: tests dial loopback only. botocore looks for credentials and region in
# the EC2 instance metadata service (169.254.169.254) when it finds none elsewhere; the
# e2e network watch saw the test process dial it. Nothing in the tests needs it.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
