#!/usr/bin/env python3
"""tufctl: a second, independent TUF implementation (python-tuf 7.0.1) for canup's tests.

canup's client is built on tough; checking it only against repositories that tough itself
wrote would let a shared misreading of the spec pass unnoticed. This tool writes repositories
with python-tuf's Metadata API, reads them with python-tuf's reference client (ngclient), and
plays the vendor and the attacker (re-signing, forging a root with a retired key).

Repository layout (canup's): REPO/metadata/{N.root.json, N.targets.json, N.snapshot.json,
timestamp.json} with consistent_snapshot, REPO/targets/SHA256.NAME. Keys: ed25519, private
keys as unencrypted PKCS#8 PEM files. Every subcommand prints one JSON object on stdout, or
one line on stderr and exits 1.

Subcommands: read, write-repo, resign, forge-root, info (see --help of each).
"""

import argparse
import hashlib
import json
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, MetaFile, Role, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface, Updater
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

TOP_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
EXPIRY_DAYS = {Root.type: 365, Targets.type: 90, Snapshot.type: 14, Timestamp.type: 1}
SERIALIZER = JSONSerializer(compact=False)
HASH_ALGS = ["sha256"]


class Fail(Exception):
    """An expected failure: reported as one line, exit status 1."""


# --- Repository files


def expiry(days):
    # Whole seconds: the TUF date format has no fraction, so keep in memory what will be written.
    # (days may be negative or fractional: tests need already-expired metadata too.)
    return (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)


def versions(metadir, role):
    """Versions N for which metadir/N.role.json exists, ascending."""
    pat = re.compile(rf"^([1-9][0-9]*)\.{role}\.json$")
    found = (pat.match(p.name) for p in Path(metadir).iterdir()) if Path(metadir).is_dir() else ()
    return sorted(int(m.group(1)) for m in found if m)


def role_path(metadir, role, version):
    # timestamp.json is the one unversioned file: clients always fetch it first, by that name.
    if role == Timestamp.type:
        return Path(metadir) / "timestamp.json"
    return Path(metadir) / f"{version}.{role}.json"


def load_current(metadir, role):
    """The role's current metadata: timestamp.json, or the highest N.role.json."""
    if role == Timestamp.type:
        path = role_path(metadir, role, None)
        if not path.is_file():
            raise Fail(f"{path} not found")
    else:
        vs = versions(metadir, role)
        if not vs:
            raise Fail(f"no N.{role}.json in {metadir}")
        path = role_path(metadir, role, vs[-1])
    return Metadata.from_file(str(path))


def write(md, path):
    """The bytes Metadata.to_file(path, SERIALIZER) would write, but replaced atomically and
    mode 0644: to_file removes the old file before writing the new one (a server reading
    meanwhile sees a 404) and creates it 0777 & ~umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(md.to_bytes(SERIALIZER))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def target_file_name(name, sha256):
    # Consistent snapshot: the hash prefixes the basename, not the whole path (as ngclient and
    # tough both fetch it).
    dirname, sep, base = name.rpartition("/")
    return f"{dirname}{sep}{sha256}.{base}"


# --- Keys


def save_key(signer, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start so the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.private_bytes)
    os.chmod(path, 0o600)
    return path


def load_signer(pem_path, metadir):
    """A signer for a PEM key, using the keyid under which REPO's roots list that key.

    The keyid is looked up by public key, newest root first, rather than recomputed: a client
    matches signatures to keys by keyid, so a signature must carry the repository's own keyid
    for the key (a retired key is found in the older root that listed it). A key no root lists
    gets securesystemslib's default keyid: resign must work with unauthorised keys too.
    """
    try:
        private = load_pem_private_key(Path(pem_path).read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise Fail(f"cannot load private key {pem_path}: {e}") from e
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    for v in reversed(versions(metadir, Root.type)):
        root = Metadata.from_file(str(role_path(metadir, Root.type, v))).signed
        for keyid, key in root.keys.items():
            if key.keytype == "ed25519" and key.keyval.get("public") == raw:
                return CryptoSigner(private, key)
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def sign(md, signers):
    # Old signatures are over the old content: keeping them would only add invalid ones.
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)


def meta_for(metadir, role, version):
    """The snapshot/timestamp entry for role's version: with length and sha256 when the file is
    there to measure, version only otherwise (stale hashes would be worse than none)."""
    path = role_path(metadir, role, version)
    if path.is_file():
        return MetaFile.from_data(version, path.read_bytes(), HASH_ALGS)
    return MetaFile(version=version)


# --- read: python-tuf's reference client


class LocalOrHttpFetcher(FetcherInterface):
    """ngclient's default fetcher (urllib3) only does http(s); this adds file:// so the same
    client can read a repository straight off disk."""

    def __init__(self):
        self._http = Urllib3Fetcher()

    def _fetch(self, url):
        u = urlparse(url)
        if u.scheme != "file":
            return self._http._fetch(url)
        if u.netloc not in ("", "localhost"):
            raise Fail(f"file URL with a host: {url}")
        try:
            f = open(unquote(u.path), "rb")  # noqa: SIM115 (closed by the generator)
        except (FileNotFoundError, NotADirectoryError) as e:
            # The Updater stops probing for N+1.root.json only on a 403/404 DownloadHTTPError.
            raise DownloadHTTPError(f"not found: {url}", 404) from e
        return self._chunks(f)

    @staticmethod
    def _chunks(f):
        with f:
            while chunk := f.read(1 << 16):
                yield chunk


def cmd_read(a):
    metadir = Path(a.dir) / "metadata"
    targetdir = Path(a.dir) / "targets"
    metadir.mkdir(parents=True, exist_ok=True)
    targetdir.mkdir(parents=True, exist_ok=True)
    # A long-lived client trusts what it persisted last time (ngclient keeps root.json as a
    # symlink to root_history/N.root.json); the --trusted-root only seeds a new client.
    bootstrap = None if (metadir / "root.json").exists() else Path(a.trusted_root).read_bytes()
    updater = Updater(
        metadata_dir=str(metadir),
        metadata_base_url=a.metadata_url,
        target_dir=str(targetdir),
        target_base_url=a.targets_url,
        fetcher=LocalOrHttpFetcher(),
        bootstrap=bootstrap,
    )
    updater.refresh()
    downloaded = {}
    for name in a.target:
        info = updater.get_targetinfo(name)
        if info is None:
            raise Fail(f"target {name!r} is not in the repository")
        path = updater.download_target(info)
        downloaded[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    # Versions from what the client persisted, i.e. exactly what it verified and now trusts.
    out = {r: Metadata.from_file(str(metadir / f"{r}.json")).signed.version for r in TOP_ROLES}
    out["downloaded"] = downloaded
    return out


# --- write-repo: a complete repository, one key per role


def targets_from_repo(repo):
    """(name, bytes) of every target in a TUF repo's newest N.targets.json, checked on read."""
    md = load_current(Path(repo) / "metadata", Targets.type)
    for name, tf in sorted(md.signed.targets.items()):
        sha = tf.hashes.get("sha256")
        if sha is None:
            raise Fail(f"target {name} has no sha256 hash")
        data = (Path(repo) / "targets" / target_file_name(name, sha)).read_bytes()
        tf.verify_length_and_hashes(data)
        yield name, data


def targets_from_dir(d):
    for p in sorted(Path(d).rglob("*")):
        if p.is_file():
            yield p.relative_to(d).as_posix(), p.read_bytes()


def cmd_write_repo(a):
    out = Path(a.out)
    metadir = out / "metadata"
    if metadir.is_dir() and any(metadir.iterdir()):
        raise Fail(f"{metadir} is not empty: write-repo only writes new repositories")
    keydir = Path(a.keys_out) if a.keys_out else out.resolve().parent / "keys"
    source = targets_from_repo(a.targets_from) if a.targets_from else targets_from_dir(a.targets_dir)

    targets = Metadata(Targets(expires=expiry(EXPIRY_DAYS[Targets.type])))
    for name, data in source:
        tf = TargetFile.from_data(name, data, HASH_ALGS)
        targets.signed.targets[name] = tf
        dest = out / "targets" / target_file_name(name, tf.hashes["sha256"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)

    signers = {r: CryptoSigner.generate_ed25519() for r in TOP_ROLES}
    root = Metadata(Root(expires=expiry(EXPIRY_DAYS[Root.type]), consistent_snapshot=True))
    for r, s in signers.items():
        root.signed.add_key(s.public_key, r)

    # Each file's hashes are taken from the bytes actually written, so they match what serves.
    sign(targets, [signers[Targets.type]])
    write(targets, role_path(metadir, Targets.type, 1))
    snapshot = Metadata(Snapshot(expires=expiry(EXPIRY_DAYS[Snapshot.type])))
    snapshot.signed.meta["targets.json"] = meta_for(metadir, Targets.type, 1)
    sign(snapshot, [signers[Snapshot.type]])
    write(snapshot, role_path(metadir, Snapshot.type, 1))
    timestamp = Metadata(Timestamp(expires=expiry(EXPIRY_DAYS[Timestamp.type])))
    timestamp.signed.snapshot_meta = meta_for(metadir, Snapshot.type, 1)
    sign(timestamp, [signers[Timestamp.type]])
    write(timestamp, role_path(metadir, Timestamp.type, 1))
    sign(root, [signers[Root.type]])
    root_path = write(root, role_path(metadir, Root.type, 1))

    keys = {r: str(save_key(s, keydir / f"{r}.pem")) for r, s in signers.items()}
    return {
        "root": str(root_path),
        "keys": keys,
        "keyids": {r: s.public_key.keyid for r, s in signers.items()},
        "targets": {n: tf.hashes["sha256"] for n, tf in targets.signed.targets.items()},
    }


# --- resign: the vendor's and the attacker's generic tool (deliberately no authorisation check)


def resign(repo, role, key_paths=(), signers=(), version=None, bump=False, expires_days=None,
           snapshot_version=None, targets_version=None):
    metadir = Path(repo) / "metadata"
    md = load_current(metadir, role)
    if version is not None:
        md.signed.version = version
    elif bump:
        md.signed.version += 1
    if expires_days is not None:
        md.signed.expires = expiry(expires_days)
    if snapshot_version is not None:
        if role != Timestamp.type:
            raise Fail("--snapshot-version only applies to --role timestamp")
        md.signed.snapshot_meta = meta_for(metadir, Snapshot.type, snapshot_version)
    if targets_version is not None:
        if role != Snapshot.type:
            raise Fail("--targets-version only applies to --role snapshot")
        md.signed.meta["targets.json"] = meta_for(metadir, Targets.type, targets_version)
    signers = list(signers) + [load_signer(k, metadir) for k in key_paths]
    if not signers:
        raise Fail("no signing key given")
    sign(md, signers)
    path = write(md, role_path(metadir, role, md.signed.version))
    return {"role": role, "version": md.signed.version, "path": str(path),
            "keyids": [s.public_key.keyid for s in signers]}


def cmd_resign(a):
    return resign(a.repo, a.role, key_paths=a.key, version=a.version, bump=a.bump,
                  expires_days=a.expires_days, snapshot_version=a.snapshot_version,
                  targets_version=a.targets_version)


# --- forge-root: a root N handing every role to a fresh attacker key, plus a matching chain


def cmd_forge_root(a):
    metadir = Path(a.repo) / "metadata"
    older = [v for v in versions(metadir, Root.type) if v < a.version]
    if not older:
        raise Fail(f"no root older than version {a.version} in {metadir}")
    # Keys first: they are looked up in the genuine roots, before N.root.json is overwritten.
    signers = [load_signer(k, metadir) for k in a.key]
    attacker = CryptoSigner.generate_ed25519()
    akey = attacker.public_key

    root = Metadata.from_file(str(role_path(metadir, Root.type, older[-1])))
    root.signed.version = a.version
    root.signed.expires = expiry(EXPIRY_DAYS[Root.type])
    root.signed.keys = {akey.keyid: akey}
    root.signed.roles = {r: Role([akey.keyid], 1) for r in TOP_ROLES}
    # Signed by the given (e.g. retired) keys to pass the previous root's threshold, and by the
    # attacker key to pass the new root's own threshold.
    sign(root, signers + [attacker])
    root_path = write(root, role_path(metadir, Root.type, a.version))
    save_key(attacker, a.attacker_key_out)

    t = resign(a.repo, Targets.type, signers=[attacker], bump=True,
               expires_days=EXPIRY_DAYS[Targets.type])
    s = resign(a.repo, Snapshot.type, signers=[attacker], bump=True,
               expires_days=EXPIRY_DAYS[Snapshot.type], targets_version=t["version"])
    ts = resign(a.repo, Timestamp.type, signers=[attacker], bump=True,
                expires_days=EXPIRY_DAYS[Timestamp.type], snapshot_version=s["version"])
    return {"root": str(root_path), "attacker_key": a.attacker_key_out,
            "attacker_keyid": akey.keyid,
            "signed_by": [x.public_key.keyid for x in signers + [attacker]],
            "targets": t["version"], "snapshot": s["version"], "timestamp": ts["version"]}


# --- info


def cmd_info(a):
    metadir = Path(a.repo) / "metadata"
    mds = {r: load_current(metadir, r) for r in TOP_ROLES}
    out = {r: md.signed.version for r, md in mds.items()}
    out["expires"] = {r: md.signed.expires.strftime("%Y-%m-%dT%H:%M:%SZ") for r, md in mds.items()}
    out["roles"] = {r: {"keyids": sorted(role.keyids), "threshold": role.threshold}
                    for r, role in mds[Root.type].signed.roles.items()}
    out["signed_by"] = {r: sorted(md.signatures) for r, md in mds.items()}
    return out


class Parser(argparse.ArgumentParser):
    # Usage errors are failures like any other: one line, status 1.
    def error(self, message):
        raise Fail(f"usage: {message} (see {self.prog} --help)")


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def build_parser():
    p = Parser(prog="tufctl", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    r = sub.add_parser("read", help="refresh with ngclient and download targets")
    r.add_argument("--metadata-url", required=True)
    r.add_argument("--targets-url", required=True)
    r.add_argument("--trusted-root", required=True, help="seeds DIR/metadata/root.json if absent")
    r.add_argument("--dir", required=True, help="client state: DIR/metadata, DIR/targets")
    r.add_argument("--target", action="append", default=[])
    r.set_defaults(func=cmd_read)

    w = sub.add_parser("write-repo", help="write a new repository with fresh keys")
    w.add_argument("out")
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--targets-from", help="a TUF repository whose targets to copy")
    src.add_argument("--targets-dir", help="a plain directory of target files")
    w.add_argument("--keys-out", help="where to save the private keys (default OUT/../keys)")
    w.set_defaults(func=cmd_write_repo)

    s = sub.add_parser("resign", help="change and re-sign timestamp, snapshot or targets")
    s.add_argument("repo")
    s.add_argument("--role", required=True, choices=[Timestamp.type, Snapshot.type, Targets.type])
    s.add_argument("--key", required=True, action="append")
    v = s.add_mutually_exclusive_group()
    v.add_argument("--version", type=positive)
    v.add_argument("--bump", action="store_true")
    s.add_argument("--expires-days", type=float)
    s.add_argument("--snapshot-version", type=positive)
    s.add_argument("--targets-version", type=positive)
    s.set_defaults(func=cmd_resign)

    f = sub.add_parser("forge-root", help="forge root N giving every role to an attacker key")
    f.add_argument("repo")
    f.add_argument("--key", required=True, action="append")
    f.add_argument("--version", required=True, type=positive)
    f.add_argument("--attacker-key-out", required=True)
    f.set_defaults(func=cmd_forge_root)

    i = sub.add_parser("info", help="versions and role keys of a repository")
    i.add_argument("repo")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        result = args.func(args)
    except Exception as e:  # noqa: BLE001 (the contract is: any failure is one line, status 1)
        msg = str(e) if isinstance(e, Fail) else f"{type(e).__name__}: {e}"
        # ngclient wraps transport errors with bare messages (a refused connection is an empty
        # SlowRetrievalError): the causes say what actually happened.
        cause = None if isinstance(e, Fail) else e.__cause__
        while cause is not None:
            msg += f" <- {type(cause).__name__}: {cause}"
            cause = cause.__cause__
        print(f"tufctl: {' '.join(msg.split())}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
