"""Where secrets come from: the environment or files mounted from Kubernetes Secrets.

Never from the config file, never logged. The operator mounts each provider's Secret key
at ``<secrets dir>/providers/<provider>/apiKey`` and the API keys Secret at
``<secrets dir>/api-keys/keys.yaml`` (:mod:`.contract`); locally, ``apiKeyEnv`` names an
environment variable and ``--api-keys`` names a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .config import ProviderSpec
from .contract import (
    API_KEYS_FILE,
    API_KEYS_FILE_ENV,
    PROVIDER_KEY_FILE,
    SECRETS_DIR,
    SECRETS_DIR_ENV,
    api_keys_dir,
    provider_key_dir,
)


def secrets_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(SECRETS_DIR_ENV, SECRETS_DIR))


def provider_key_path(provider: str, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(provider_key_dir(provider, str(secrets_dir(environ)))) / PROVIDER_KEY_FILE


def api_keys_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The API keys file: ``SWIFTCLAW_API_KEYS_FILE``, else the mounted Secret."""
    explicit = environ.get(API_KEYS_FILE_ENV)
    if explicit:
        return Path(explicit)
    return Path(api_keys_dir(str(secrets_dir(environ)))) / API_KEYS_FILE


def resolve_provider_key(spec: ProviderSpec, environ: Mapping[str, str] = os.environ) -> str | None:
    """The provider's API key from its environment variable, else its mounted Secret file."""
    if spec.api_key_env:
        value = environ.get(spec.api_key_env)
        if value:
            return value.strip()
    path = provider_key_path(spec.name, environ)
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
