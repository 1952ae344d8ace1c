"""Signed anchors of the audit chain: keys, digests that chain like CloudTrail's, and what verification finds
when events are deleted from the end, the chain is rewritten, or a digest is forged or removed."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from core.config import load_config
from core.errors import BadInputError, ConfigError
from flows.anchor import anchor_audit
from flows.deployments import build_deployments
from governance.anchors import (
    DigestBody,
    KeyFiles,
    anchor_registry,
    digest_bytes,
    fingerprint,
    load_private_key,
    load_public_key,
    sign,
    write_key_pair,
)
from governance.audit import GENESIS_HASH, event_hash
from governance.events import InputRejected
from governance.redact import mask_url
from governance.registry import Registry
from steward.cli import main
from tests.conftest import tamper


def rewrite_chain(url: str) -> None:
    """Re-attribute every event to mallory and recompute every hash and link: the chain still verifies."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            columns = "seq, created_at, actor, event_type, subject, payload"
            rows = conn.execute(text(f"SELECT {columns} FROM audit_events ORDER BY seq")).all()
    finally:
        engine.dispose()
    updates, prev_hash = [], GENESIS_HASH
    for row in rows:
        event = {**row._asdict(), "actor": "mallory", "prev_hash": prev_hash}
        prev_hash = event["hash"] = event_hash(**event)
        updates.append(event)
    tamper(url, "UPDATE audit_events SET actor = :actor, prev_hash = :prev_hash, hash = :hash WHERE seq = :seq",
           params=updates)


def fill(url: str, count: int) -> None:
    with Registry.open(url) as registry:
        for i in range(count):
            registry.audit.append("config", InputRejected(command="test", config=None, error=f"e{i}", exit_code=2))


@pytest.fixture
def keys(tmp_path: Path) -> KeyFiles:
    return write_key_pair(tmp_path / "keys")


@pytest.fixture
def anchors(tmp_path: Path) -> Path:
    return tmp_path / "anchors"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def anchor(capsys: pytest.CaptureFixture[str], url: str, keys: KeyFiles, directory: Path) -> dict:
    code, out, err = cli(capsys, "audit", "anchor", "--key", str(keys.private_key), "--out", str(directory),
                         "--registry", url, "--json")
    assert code == 0, err
    return json.loads(out)


def verify(capsys: pytest.CaptureFixture[str], url: str, keys: KeyFiles, directory: Path) -> tuple[int, dict, str]:
    code, out, err = cli(capsys, "audit", "verify", "--anchors", str(directory), "--public-key", str(keys.public_key),
                         "--registry", url, "--json")
    return code, json.loads(out), err


def plain_verify(capsys: pytest.CaptureFixture[str], url: str) -> int:
    return cli(capsys, "audit", "verify", "--registry", url)[0]


def test_keygen_writes_an_owner_only_private_key_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "audit", "keygen", "--out", str(tmp_path / "keys"), "--json")
    written = json.loads(out)
    private, public = Path(written["private_key"]), Path(written["public_key"])
    assert code == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert fingerprint(load_private_key(private).public_key()) == fingerprint(load_public_key(public))
    assert written["fingerprint"] == fingerprint(load_public_key(public))

    before = private.read_bytes()
    code, _, err = cli(capsys, "audit", "keygen", "--out", str(tmp_path / "keys"))
    assert (code, err.count("\n")) == (2, 1)
    assert "refusing to overwrite a key" in err
    assert private.read_bytes() == before


def test_anchor_signs_the_head_before_its_own_event_and_verifies(
    registry_url: str, keys: KeyFiles, anchors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(registry_url, 5)
    written = anchor(capsys, registry_url, keys, anchors)
    digest = written["digest"]
    assert (digest["head_seq"], digest["event_count"], digest["format_version"]) == (5, 5, 1)
    assert (digest["previous_digest"], digest["previous_digest_sha256"]) == (None, None)
    assert (digest["registry"], digest["key_fingerprint"]) == (mask_url(registry_url), keys.fingerprint)
    assert datetime.fromisoformat(digest["created_at"]).utcoffset() == timedelta(0)
    assert json.loads(Path(written["path"]).read_bytes())["body"] == digest

    with Registry.open(registry_url) as registry:
        events = registry.audit.events()
    assert events[4].hash == digest["head_hash"]
    anchored = events[-1]
    assert (anchored.seq, anchored.event_type, anchored.prev_hash) == (6, "audit_anchored", digest["head_hash"])
    assert (anchored.payload["head_seq"], anchored.payload["digest"]) == (5, Path(written["path"]).name)

    code, report, _ = verify(capsys, registry_url, keys, anchors)
    assert (code, report["ok"], report["reason"]) == (0, True, None)
    assert (report["chain"]["events_checked"], report["anchors"]["digests_checked"]) == (6, 1)


def test_a_second_anchor_names_and_hashes_the_first(
    sqlite_url: str, keys: KeyFiles, anchors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(sqlite_url, 2)
    first, second = (anchor(capsys, sqlite_url, keys, anchors) for _ in range(2))
    first_path, second_path = Path(first["path"]), Path(second["path"])
    assert second["digest"]["previous_digest"] == first_path.name
    assert second["digest"]["previous_digest_sha256"] == hashlib.sha256(first_path.read_bytes()).hexdigest()
    assert second["digest"]["head_seq"] == first["digest"]["head_seq"] + 1  # the first anchor's own event
    assert sorted(path.name for path in anchors.glob("*.json")) == [first_path.name, second_path.name]
    assert verify(capsys, sqlite_url, keys, anchors)[0] == 0


def test_deleting_the_newest_events_is_truncation(
    registry_url: str, keys: KeyFiles, anchors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(registry_url, 5)
    name = Path(anchor(capsys, registry_url, keys, anchors)["path"]).name
    tamper(registry_url, "DELETE FROM audit_events WHERE seq > 3")
    assert plain_verify(capsys, registry_url) == 0  # a shorter chain is still a valid chain

    code, report, err = verify(capsys, registry_url, keys, anchors)
    assert code == 1
    assert err == (f"steward: error: truncated: events after 3 deleted (digest {name} anchored head 5, "
                   "registry head 3)\n")
    assert [finding["kind"] for finding in report["anchors"]["findings"]] == ["truncated"]
    assert report["chain"]["ok"] is True


def test_a_rewritten_chain_with_valid_hashes_is_caught(
    registry_url: str, keys: KeyFiles, anchors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(registry_url, 5)
    name = Path(anchor(capsys, registry_url, keys, anchors)["path"]).name
    rewrite_chain(registry_url)
    assert plain_verify(capsys, registry_url) == 0

    code, report, err = verify(capsys, registry_url, keys, anchors)
    assert code == 1
    assert err == f"steward: error: chain rewritten: event 5 hash differs from digest {name}\n"
    assert report["anchors"]["findings"][0]["kind"] == "rewritten"


def _edit_head_hash(path: Path, other: KeyFiles) -> None:
    document = json.loads(path.read_bytes())
    document["body"]["head_hash"] = "f" * 64
    path.write_text(json.dumps(document), encoding="utf-8")


def _resign_with_another_key(path: Path, other: KeyFiles) -> None:
    body = DigestBody(**json.loads(path.read_bytes())["body"])
    path.write_bytes(digest_bytes(sign(body, load_private_key(other.private_key))))


@pytest.mark.parametrize("forge", [_edit_head_hash, _resign_with_another_key], ids=["edited", "re-signed"])
def test_a_forged_digest_is_named(
    sqlite_url: str, keys: KeyFiles, anchors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], forge,
) -> None:
    fill(sqlite_url, 2)
    path = Path(anchor(capsys, sqlite_url, keys, anchors)["path"])
    forge(path, write_key_pair(tmp_path / "mallory"))
    code, report, err = verify(capsys, sqlite_url, keys, anchors)
    assert code == 1
    assert err.startswith(f"steward: error: forged digest {path.name}: its signature does not verify")
    assert report["anchors"]["findings"][0]["kind"] == "forged"


def _delete(path: Path) -> None:
    path.unlink()


def _reformat(path: Path) -> None:
    """Same body, same valid signature, other bytes: the next digest's sha256 no longer matches."""
    path.write_text(json.dumps(json.loads(path.read_bytes())), encoding="utf-8")


@pytest.mark.parametrize("change", [_delete, _reformat], ids=["deleted", "altered"])
def test_a_missing_or_altered_middle_digest_is_named(
    sqlite_url: str, keys: KeyFiles, anchors: Path, capsys: pytest.CaptureFixture[str], change,
) -> None:
    fill(sqlite_url, 1)
    paths = [Path(anchor(capsys, sqlite_url, keys, anchors)["path"]) for _ in range(3)]
    change(paths[1])
    code, report, err = verify(capsys, sqlite_url, keys, anchors)
    assert code == 1
    assert err == f"steward: error: missing or altered digest before {paths[2].name}\n"
    assert [finding["kind"] for finding in report["anchors"]["findings"]] == ["missing"]


def test_anchor_refuses_a_broken_chain_and_a_chain_its_digests_disown(
    sqlite_url: str, keys: KeyFiles, anchors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(sqlite_url, 4)
    anchor(capsys, sqlite_url, keys, anchors)
    tamper(sqlite_url, "DELETE FROM audit_events WHERE seq > 2")
    argv = ("audit", "anchor", "--key", str(keys.private_key), "--out", str(anchors), "--registry", sqlite_url)
    code, _, err = cli(capsys, *argv)
    assert (code, err.count("\n")) == (1, 1)
    assert err.startswith("steward: error: cannot anchor: truncated: events after 2 deleted")

    tamper(sqlite_url, "UPDATE audit_events SET payload = '{}' WHERE seq = 2")
    code, _, err = cli(capsys, *argv)
    assert (code, err) == (1, "steward: error: cannot anchor: audit chain broken at event 2: event 2 was altered "
                              "(its hash does not match its contents)\n")
    assert len(list(anchors.glob("*.json"))) == 1


def test_a_failed_write_leaves_no_digest_and_no_event(
    sqlite_url: str, keys: KeyFiles, anchors: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(sqlite_url, 1)

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("governance.anchors.os.replace", disk_full)
    with pytest.raises(BadInputError, match="No space left on device"):
        anchor_registry(sqlite_url, keys.private_key, anchors)
    assert [path.name for path in anchors.iterdir()] == [".steward-anchor.lock"]
    with Registry.open(sqlite_url) as registry:
        assert [event.event_type for event in registry.audit.events()] == ["input_rejected"]


def test_an_empty_anchor_directory_fails(
    sqlite_url: str, keys: KeyFiles, anchors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchors.mkdir()
    code, report, err = verify(capsys, sqlite_url, keys, anchors)
    assert (code, report["anchors"]["findings"][0]["kind"]) == (1, "missing")
    assert err == "steward: error: missing or altered digest: the anchor directory holds no digests\n"


@pytest.mark.parametrize("problem", ["no directory", "garbage key", "private key as public", "no key"])
def test_bad_anchor_inputs_are_one_line_exit_2(
    problem: str, sqlite_url: str, keys: KeyFiles, anchors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchors.mkdir()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key", encoding="utf-8")
    options = {
        "no directory": ["--anchors", str(tmp_path / "nowhere"), "--public-key", str(keys.public_key)],
        "garbage key": ["--anchors", str(anchors), "--public-key", str(garbage)],
        "private key as public": ["--anchors", str(anchors), "--public-key", str(keys.private_key)],
        "no key": ["--anchors", str(anchors)],
    }[problem]
    code, _, err = cli(capsys, "audit", "verify", *options, "--registry", sqlite_url)
    assert (code, err.count("\n")) == (2, 1)
    assert err.startswith("steward: error: ")


def _config(folder: Path, **audit: str) -> Path:
    config = {"name": "tickets", "data": {"train": "train.csv", "test": "test.csv"}, "audit": audit,
              "registry": {"url": f"sqlite:///{folder / 'registry.db'}"}}
    path = folder / "steward.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_serve_adds_the_anchor_deployment_only_with_anchor_cron(tmp_path: Path, keys: KeyFiles) -> None:
    path = _config(tmp_path, anchor_cron="*/30 * * * *", anchor_dir="anchors", anchor_key=str(keys.private_key))
    served = build_deployments(load_config(path), path)
    assert served.anchor is not None
    assert (served.anchor.name, served.anchor.flow_name) == ("tickets-audit-anchor", "steward-audit-anchor")
    (schedule,) = served.anchor.schedules
    assert schedule.schedule.cron == "*/30 * * * *"
    assert served.anchor.parameters == {"config_path": str(path.resolve())}
    assert served.anchor.concurrency_limit == 1
    assert served.anchor in served.all()

    without = _config(tmp_path)
    assert build_deployments(load_config(without), without).anchor is None

    missing_key = _config(tmp_path, anchor_cron="0 * * * *", anchor_dir="anchors", anchor_key="absent.pem")
    with pytest.raises(BadInputError, match=r"absent\.pem: key file not found"):
        build_deployments(load_config(missing_key), missing_key)


@pytest.mark.usefixtures("prefect_harness")
def test_the_anchor_flow_writes_into_the_configured_directory(tmp_path: Path, keys: KeyFiles) -> None:
    path = _config(tmp_path, anchor_cron="0 * * * *", anchor_dir="anchors", anchor_key=str(keys.private_key))
    written = anchor_audit(str(path))
    assert written.path.parent == tmp_path / "anchors"
    assert written.digest.head_seq == 0


@pytest.mark.parametrize(("audit", "message"), [
    ({"anchor_cronn": "0 * * * *"}, "unknown key 'audit.anchor_cronn' (did you mean 'anchor_cron'?)"),
    ({"anchor_cron": "0 * * * *", "anchor_dir": "anchors"}, "key 'audit': anchor_cron needs anchor_key too"),
])
def test_a_bad_audit_section_names_the_key(tmp_path: Path, audit: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, **audit))
    assert str(error.value).endswith(message)
