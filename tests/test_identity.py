"""Node identities and the roster (fedcrypt.identity)."""

from __future__ import annotations

import os
import stat
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.crypto import ed25519_verify
from fedcrypt.errors import FedcryptError, IdentityError
from fedcrypt.identity import NodeIdentity, Roster
from fedcrypt.secagg import SecAggConfig
from fedcrypt.testing import InProcessClients, MaliciousServer

NAMES = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)


def roster_of(names) -> tuple[Roster, dict[str, NodeIdentity]]:
    identities = {name: NodeIdentity.generate() for name in names}
    return Roster({name: i.public_bytes for name, i in identities.items()}), identities


@settings(max_examples=25, deadline=None)
@given(names=st.sets(NAMES, min_size=1, max_size=6))
def test_roster_bytes_round_trip_and_the_digest_pins_them(names) -> None:
    roster, _ = roster_of(sorted(names))
    data = roster.to_bytes()
    again = Roster.from_bytes(data, expected_digest=roster.digest())
    assert again == roster and again.to_bytes() == data and again.names == tuple(sorted(names))
    other, _ = roster_of(sorted(names))  # same names, other keys
    with pytest.raises(IdentityError, match="not the one pinned"):
        Roster.from_bytes(other.to_bytes(), expected_digest=roster.digest())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.replace(b"fedcrypt-roster/v1", b"fedcrypt-roster/v2"), "starts with"),
        (lambda d: d[:-1], "ends with a newline"),
        (lambda d: d.replace(b" ", b"  ", 1), "is not '<name>"),
        (lambda d: d.upper(), "starts with"),
        (lambda d: d + d.split(b"\n", 1)[1], "repeats member"),
        (lambda d: b"\xff" + d, "ASCII"),
    ],
)
def test_malformed_rosters_are_refused_with_a_typed_error(mutate, message) -> None:
    roster, _ = roster_of(["alice", "bob"])
    with pytest.raises(IdentityError, match=message):
        Roster.from_bytes(mutate(roster.to_bytes()))


def test_non_canonical_order_repeated_keys_and_bad_points_are_refused() -> None:
    roster, _ = roster_of(["alice", "bob"])
    header, first, second, _ = roster.to_bytes().split(b"\n")
    with pytest.raises(IdentityError, match="canonical"):
        Roster.from_bytes(b"\n".join([header, second, first, b""]))
    key = roster.key("alice")
    with pytest.raises(IdentityError, match="share one key"):
        Roster({"alice": key, "bob": key})
    with pytest.raises(IdentityError, match="not 1-64 characters"):
        Roster({"al ice": key})
    with pytest.raises(IdentityError, match="1 to"):
        Roster({})
    with pytest.raises(IdentityError, match="not a roster member"):
        roster.key("carol")
    with pytest.raises(IdentityError, match="twice"):
        roster.verify_keys(["alice", "alice"])


def test_identity_files_are_private_never_overwritten_and_load_back(tmp_path) -> None:
    identity = NodeIdentity.generate()
    path = tmp_path / "node.pem"
    identity.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        NodeIdentity.generate().save(path)
    loaded = NodeIdentity.load(path)
    assert loaded.public_bytes == identity.public_bytes
    signature = loaded.signing_key.sign(b"message")
    ed25519_verify(identity.public_bytes, signature, b"message")
    private_hex = identity.signing_key.private_bytes().reveal().hex()
    for text in (repr(identity), str(identity), repr(loaded)):
        assert private_hex not in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(identity)


def test_other_key_files_are_refused(tmp_path) -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1())  # e.g. a Flower node-authentication key
    pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.pem").write_bytes(pem)
    with pytest.raises(IdentityError, match="another type"):
        NodeIdentity.load(tmp_path / "ec.pem")
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    with pytest.raises(IdentityError, match="not an unencrypted PEM"):
        NodeIdentity.load(tmp_path / "junk.pem")


def test_roster_file_round_trip_and_a_malicious_server_round_with_roster_keys(tmp_path) -> None:
    names = ["node-a", "node-b", "node-c", "node-d", "node-e"]
    roster, identities = roster_of(names)
    roster.save(tmp_path / "roster.txt")
    pinned = Roster.load(tmp_path / "roster.txt", expected_digest=roster.digest())
    keys = pinned.verify_keys(names)
    assert all(keys[i] == identities[name].public_bytes for i, name in enumerate(names))
    assert pinned.name_of(identities["node-c"].public_bytes) == "node-c"
    # the identities drive a malicious-server-mode round: the sum of the survivors is exact
    config = SecAggConfig(num_clients=5, threshold=3, verify_survivors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the malicious-server mode does not warn
        endpoints = InProcessClients(config, signing_keys=[identities[name].signing_key for name in names])
        report = MaliciousServer(endpoints).run()  # a server that follows the protocol
    assert report.completed and report.sum_correct and not report.refusals
    assert issubclass(IdentityError, FedcryptError) and issubclass(IdentityError, ValueError)


def test_credentials_load_pinned_and_go_together(tmp_path) -> None:
    from fedcrypt.identity import load_credentials

    identity = NodeIdentity.generate()
    identity.save(tmp_path / "node.pem")
    roster = Roster({"node": identity.public_bytes})
    roster.save(tmp_path / "roster.txt")
    paths = (str(tmp_path / "node.pem"), str(tmp_path / "roster.txt"))
    assert load_credentials(None, None, None) == (None, None)
    loaded, mine = load_credentials(*paths, roster.digest().hex())
    assert loaded == roster and mine.public_bytes == identity.public_bytes
    with pytest.raises(IdentityError, match="go together"):
        load_credentials(paths[0], None, roster.digest().hex())
    with pytest.raises(IdentityError, match="not hex"):
        load_credentials(*paths, "zz")
    with pytest.raises(IdentityError, match="64 hex digits"):
        load_credentials(*paths, "ab")
    with pytest.raises(IdentityError):  # another roster than the pinned one
        load_credentials(*paths, bytes(32).hex())
