"""The scheduled anchor: a signed digest of the audit chain head on `audit.anchor_cron` (governance/anchors.py)."""

from __future__ import annotations

from prefect import flow

from core.config import load_config, resolve_registry_url
from core.errors import BadInputError
from governance.anchors import AnchorWritten, anchor_registry


@flow(name="steward-audit-anchor", log_prints=False)
def anchor_audit(config_path: str) -> AnchorWritten:
    """Sign the registry's verified chain head into the config's `audit.anchor_dir` with `audit.anchor_key`."""
    config = load_config(config_path)
    audit = config.audit
    if audit.anchor_dir is None or audit.anchor_key is None:
        raise BadInputError(f"{config_path}: set audit.anchor_dir and audit.anchor_key to anchor the audit chain")
    url = resolve_registry_url(config)
    return anchor_registry(url, config.resolve(audit.anchor_key), config.resolve(audit.anchor_dir))
