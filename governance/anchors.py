"""Signed anchors of the audit chain, like AWS CloudTrail's digest files.

The hash chain (``governance.audit``) shows an event edited or removed in the middle, but not the newest
events deleted, nor the whole chain rewritten with fresh valid hashes by someone who can write the
database. An anchor is a small JSON digest of the chain head (seq and hash), signed with an Ed25519 key
kept away from the database host. Each digest names the one before it and the sha256 of its bytes, so a
digest removed or edited shows too. Verification holds every digest against the registry: its anchored
event must still hash the same (else the chain was rewritten) and still exist (else its tail was deleted).

Digest files are named ``steward-anchor-<head seq, 12 digits>-<UTC time>Z.json``: in name order they are in
chain order, because anchoring appends an ``audit_anchored`` event, so each anchor's head is past the last.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, func, select

from core.errors import BadInputError, CheckFailedError
from governance.audit import GENESIS_HASH, AuditLog, ChainVerification, canonical_json
from governance.db import open_migrated, reachable, read_only
from governance.events import AuditAnchored
from governance.models import AuditEvent
from governance.redact import mask_url

FORMAT_VERSION = 1
PRIVATE_KEY_FILE = "anchor-private.pem"
PUBLIC_KEY_FILE = "anchor-public.pem"
ANCHOR_SUBJECT = "audit"
_DIGEST_NAME = re.compile(r"^steward-anchor-\d{12}-\d{8}T\d{6}Z\.json$")
_LOCK_FILE = ".steward-anchor.lock"
_TABLE = AuditEvent.__table__
_LOOKUP_BATCH = 500

FindingKind = Literal["forged", "missing", "rewritten", "truncated"]


@dataclass(frozen=True)
class KeyFiles:
    private_key: Path
    public_key: Path
    fingerprint: str


@dataclass(frozen=True)
class DigestBody:
    """What is signed: the canonical JSON of these fields."""

    format_version: int
    registry: str  # masked URL
    head_seq: int
    head_hash: str
    event_count: int
    created_at: str  # UTC, ISO 8601
    previous_digest: str | None  # file name; None for the first digest
    previous_digest_sha256: str | None  # of the previous digest file's bytes
    key_fingerprint: str


@dataclass(frozen=True)
class SignedDigest:
    body: DigestBody
    signature: str  # base64 Ed25519 signature of canonical_json(body)


@dataclass(frozen=True)
class StoredDigest:
    """A digest file found in the anchor directory. ``body`` is None when the file is not a digest signed
    by the expected key; ``problem`` then says why, and nothing in the file can be trusted."""

    name: str
    sha256: str
    body: DigestBody | None
    problem: str | None


@dataclass(frozen=True)
class RegistryState:
    """What digests are held against: the registry's head seq and its stored hash at each anchored seq."""

    head_seq: int
    hashes: dict[int, str]


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    digest: str | None
    message: str


@dataclass(frozen=True)
class AnchorReport:
    ok: bool
    directory: str
    digests_checked: int
    newest_digest: str | None
    registry_head_seq: int
    findings: list[Finding]


@dataclass(frozen=True)
class AnchoredVerification:
    """The chain and its digests; ``reason`` is the first problem of either."""

    ok: bool
    reason: str | None
    chain: ChainVerification
    anchors: AnchorReport


@dataclass(frozen=True)
class AnchorWritten:
    path: Path
    digest: DigestBody


# -- keys --------------------------------------------------------------------------------------------


def write_key_pair(directory: Path) -> KeyFiles:
    """A new Ed25519 key pair as PEM files in ``directory``: the private key readable by its owner only.
    An existing key is never overwritten (``BadInputError``)."""
    private_path, public_path = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise BadInputError(f"{path} exists already: refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(private_path, private_pem, 0o600)
        _write_new(public_path, public_pem, 0o644)
    except OSError as exc:
        raise BadInputError(f"cannot write the key pair to {directory}: {exc.strerror or exc}") from None
    return KeyFiles(private_path, public_path, fingerprint(key.public_key()))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no moment with looser permissions); fails if it exists."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = _load_key(path, "private", lambda data: serialization.load_pem_private_key(data, password=None))
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInputError(f"{path}: not an Ed25519 private key (make one with `steward audit keygen`)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = _load_key(path, "public", serialization.load_pem_public_key)
    if not isinstance(key, Ed25519PublicKey):
        raise BadInputError(f"{path}: not an Ed25519 public key (the {PUBLIC_KEY_FILE} of `steward audit keygen`)")
    return key


def _load_key(path: Path, half: str, parse: Callable[[bytes], object]) -> object:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"{path}: key file not found") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read key file ({exc.strerror or exc})") from None
    try:
        return parse(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInputError(f"{path}: not a PEM {half} key") from None


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# -- digests: pure functions ---------------------------------------------------------------------------


def sign(body: DigestBody, key: Ed25519PrivateKey) -> SignedDigest:
    signature = key.sign(canonical_json(asdict(body)).encode("utf-8"))
    return SignedDigest(body, base64.b64encode(signature).decode("ascii"))


def digest_name(body: DigestBody) -> str:
    created = datetime.fromisoformat(body.created_at).astimezone(UTC)
    return f"steward-anchor-{body.head_seq:012d}-{created:%Y%m%dT%H%M%S}Z.json"


def digest_bytes(digest: SignedDigest) -> bytes:
    document = {"body": asdict(digest.body), "signature": digest.signature}
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def read_digest(name: str, data: bytes, public_key: Ed25519PublicKey) -> StoredDigest:
    """Parse a digest file and check its signature against ``public_key``; the signature is checked over the
    body as stored, before it is trusted to mean anything."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        document = json.loads(data)
        raw_body = document["body"]
        public_key.verify(base64.b64decode(document["signature"], validate=True),
                          canonical_json(raw_body).encode("utf-8"))
        body = DigestBody(**raw_body)
    except InvalidSignature:
        return StoredDigest(name, sha256, None, f"its signature does not verify with key {fingerprint(public_key)}")
    except (ValueError, KeyError, TypeError, binascii.Error):
        return StoredDigest(name, sha256, None, "not a digest file")
    if body.format_version != FORMAT_VERSION:
        return StoredDigest(name, sha256, None, f"format version {body.format_version} is not {FORMAT_VERSION}")
    return StoredDigest(name, sha256, body, None)


def next_body(
    head_seq: int, head_hash: str, registry: str, previous: StoredDigest | None, public_key: Ed25519PublicKey,
) -> DigestBody:
    """The digest of a verified chain whose last event is ``head_seq`` (so it holds ``head_seq`` events)."""
    return DigestBody(
        format_version=FORMAT_VERSION,
        registry=registry,
        head_seq=head_seq,
        head_hash=head_hash,
        event_count=head_seq,
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        previous_digest=previous.name if previous else None,
        previous_digest_sha256=previous.sha256 if previous else None,
        key_fingerprint=fingerprint(public_key),
    )


def check_digests(digests: Sequence[StoredDigest], registry: RegistryState) -> list[Finding]:
    """Every problem of the digests (in chain order) and of the registry against them, first problem first."""
    if not digests:
        return [Finding("missing", None, "missing or altered digest: the anchor directory holds no digests")]
    findings: list[Finding] = []
    previous: StoredDigest | None = None
    for digest in digests:
        findings.extend(_check_digest(digest, previous, registry))
        previous = digest
    return findings


def _check_digest(digest: StoredDigest, previous: StoredDigest | None, registry: RegistryState) -> list[Finding]:
    if digest.body is None:
        return [Finding("forged", digest.name, f"forged digest {digest.name}: {digest.problem}")]
    body = digest.body
    findings = []
    link = (previous.name, previous.sha256) if previous else (None, None)
    if (body.previous_digest, body.previous_digest_sha256) != link:
        findings.append(Finding("missing", digest.name, f"missing or altered digest before {digest.name}"))
    if body.head_seq > registry.head_seq:
        findings.append(Finding(
            "truncated", digest.name,
            f"truncated: events after {registry.head_seq} deleted (digest {digest.name} anchored head "
            f"{body.head_seq}, registry head {registry.head_seq})",
        ))
    elif registry.hashes.get(body.head_seq) != body.head_hash:
        findings.append(Finding(
            "rewritten", digest.name, f"chain rewritten: event {body.head_seq} hash differs from digest {digest.name}"
        ))
    return findings


def anchored_seqs(digests: Iterable[StoredDigest]) -> list[int]:
    return [digest.body.head_seq for digest in digests if digest.body is not None]


# -- the anchor directory and the registry -------------------------------------------------------------


def read_digests(directory: Path, public_key: Ed25519PublicKey) -> list[StoredDigest]:
    """The digests in ``directory``, in chain order (their names sort so); other files are ignored."""
    if not directory.is_dir():
        raise BadInputError(f"{directory}: anchor directory not found")
    names = sorted(path.name for path in directory.iterdir() if _DIGEST_NAME.match(path.name))
    return [read_digest(name, (directory / name).read_bytes(), public_key) for name in names]


def registry_state(engine: Engine, seqs: Iterable[int]) -> RegistryState:
    """The registry's head seq and its stored hashes at ``seqs`` (seq 0 is the genesis hash)."""
    wanted = sorted(set(seqs) - {0})
    seq, stored_hash = _TABLE.c.seq, _TABLE.c.hash
    hashes = {0: GENESIS_HASH}
    with reachable(engine), read_only(engine).connect() as conn:
        head = conn.scalar(select(func.max(seq))) or 0
        for start in range(0, len(wanted), _LOOKUP_BATCH):
            batch = wanted[start : start + _LOOKUP_BATCH]
            hashes.update(dict(conn.execute(select(seq, stored_hash).where(seq.in_(batch))).tuples().all()))
    return RegistryState(head, hashes)


def verify_digests(engine: Engine, directory: Path, public_key: Ed25519PublicKey) -> AnchorReport:
    digests = read_digests(directory, public_key)
    state = registry_state(engine, anchored_seqs(digests))
    findings = check_digests(digests, state)
    return AnchorReport(
        ok=not findings,
        directory=str(directory),
        digests_checked=len(digests),
        newest_digest=digests[-1].name if digests else None,
        registry_head_seq=state.head_seq,
        findings=findings,
    )


def verify_anchored(engine: Engine, directory: Path, public_key: Ed25519PublicKey) -> AnchoredVerification:
    """`steward audit verify --anchors`: the chain's own links and hashes, then every digest against it (the
    digests are read first, so a missing directory fails before a long walk of the chain)."""
    anchors = verify_digests(engine, directory, public_key)
    chain = AuditLog(engine).verify()
    reasons = [] if chain.ok else [_broken(chain)]
    reasons += [finding.message for finding in anchors.findings]
    return AnchoredVerification(not reasons, reasons[0] if reasons else None, chain, anchors)


def anchor(engine: Engine, key: Ed25519PrivateKey, directory: Path, registry: str) -> AnchorWritten:
    """Write a signed digest of the verified chain head to ``directory``, then append ``audit_anchored``.

    Refused (``CheckFailedError``) when the chain is broken or no longer agrees with the digests already in
    ``directory``: a new digest must never vouch for a tampered chain. Anchors of one directory queue on a
    lock file, so two never link to the same previous digest.
    """
    audit = AuditLog(engine)
    with _locked(directory):
        chain = audit.verify()
        if not chain.ok:
            raise CheckFailedError(f"cannot anchor: {_broken(chain)}")
        digests = read_digests(directory, key.public_key())
        head = chain.events_checked
        state = registry_state(engine, [*anchored_seqs(digests), head])
        findings = check_digests(digests, state) if digests else []
        if findings:
            raise CheckFailedError(f"cannot anchor: {findings[0].message}")
        body = next_body(head, state.hashes[head], registry, digests[-1] if digests else None, key.public_key())
        path = _publish(directory, digest_name(body), digest_bytes(sign(body, key)))
        audit.append(ANCHOR_SUBJECT, AuditAnchored(body.head_seq, body.head_hash, path.name, body.key_fingerprint))
    return AnchorWritten(path, body)


def anchor_registry(url: str, key_path: Path, directory: Path) -> AnchorWritten:
    """`anchor` on the registry at ``url`` with the private key in ``key_path`` (the CLI's and the flow's entry)."""
    key = load_private_key(key_path)
    with registry_engine(url) as engine:
        return anchor(engine, key, directory, mask_url(url))


@contextmanager
def registry_engine(url: str) -> Iterator[Engine]:
    """An engine on the registry at ``url``, migrated, disposed of afterwards."""
    engine = open_migrated(url, "registry")
    try:
        yield engine
    finally:
        engine.dispose()


def _broken(chain: ChainVerification) -> str:
    return f"audit chain broken at event {chain.first_broken_seq}: {chain.reason}"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The anchor directory (made if missing), held with an exclusive lock on its lock file."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = (directory / _LOCK_FILE).open("a")
    except OSError as exc:
        raise BadInputError(f"cannot write to anchor directory {directory}: {exc.strerror or exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _publish(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``directory/name`` atomically: a synced temporary file renamed into place, so the
    digest is there whole or not at all. Callers hold the directory lock."""
    path = directory / name
    if path.exists():
        raise CheckFailedError(f"cannot anchor: {path} exists already (anchor again in a second)")
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes it 0600; a digest is no secret, verifiers read it
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise BadInputError(f"cannot write digest {path}: {exc.strerror or exc}") from None
    _sync_directory(directory)
    return path


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
