"""Peewee models. Built per database by `make_models`, so two registries in one process never share a binding."""

from __future__ import annotations

from types import SimpleNamespace

import peewee as pw

SCHEMA_VERSION = 3  # 2: HMAC verifiers instead of argon2id hashes; users bound to a client id
#                    3: roles (three new tables) and the roles a request asks for; a 2 is upgraded on open
# Tables added later without a version bump (create_tables(safe=True) adds them to an older file on open, and
# an older client-registry ignores them): approval_rules, presence, site_accounts.


def make_models(db: pw.Database) -> SimpleNamespace:
    class Base(pw.Model):
        class Meta:
            database = db

    class Meta(Base):
        key = pw.CharField(primary_key=True, max_length=64)
        value = pw.TextField()

        class Meta:
            table_name = "meta"

    class User(Base):
        name = pw.CharField(unique=True, max_length=128)
        verifier = pw.CharField(max_length=64)  # HMAC-SHA256 of name and password (store/crypto.py)
        client_id = pw.CharField(max_length=1024, null=True)  # the id it registered with: {client_id} binds to it
        admin = pw.BooleanField(default=False)
        disabled = pw.BooleanField(default=False)
        created_at = pw.DoubleField()
        created_by = pw.CharField(max_length=128)
        created_how = pw.CharField(max_length=32)  # cli | registration-mqtt | registration-http | console
        # Issue 18, added without a schema bump (database.ADDED_COLUMNS). ``certificate``: the SHA-256 (hex) of the
        # one client certificate (DER) the broker admits it with; ``certificate_serial`` and ``certificate_pem``:
        # the certificate the registry signed from its CSR (hex serial, PEM), set only then: such a user has no
        # password (its verifier is crypto.certificate_only_verifier's, which no password matches).
        certificate = pw.CharField(max_length=64, null=True)
        certificate_serial = pw.CharField(max_length=64, null=True)
        certificate_pem = pw.TextField(null=True)

        class Meta:
            table_name = "users"

    class Permission(Base):
        user = pw.ForeignKeyField(User, backref="permissions", on_delete="CASCADE")
        pattern = pw.CharField(max_length=1024)
        access = pw.CharField(max_length=16)  # read | write | readWrite

        class Meta:
            table_name = "permissions"
            indexes = ((("user", "pattern"), True),)

    class Request(Base):
        username = pw.CharField(max_length=128, index=True)
        verifier = pw.CharField(max_length=64)
        pairing_code = pw.CharField(max_length=8, null=True)  # while pending only: cleared when decided
        client_id = pw.CharField(max_length=1024, null=True)
        peer = pw.CharField(max_length=128, null=True)
        source = pw.CharField(max_length=8)  # mqtt | http
        requested_permissions = pw.TextField(null=True)  # JSON
        requested_roles = pw.TextField(null=True)  # JSON list of role names (HTTP flow); schema 3
        context = pw.TextField(null=True)  # JSON
        first_seen = pw.DoubleField(index=True)
        last_seen = pw.DoubleField()
        attempts = pw.IntegerField(default=1)
        status = pw.CharField(max_length=8, default="pending", index=True)
        conflict = pw.BooleanField(default=False)
        # A user's name tried with another password (a re-flashed or replaced device): granting replaces the
        # user's password, never by a rule, only with force. Added without a schema bump (_prepare_schema).
        rekey = pw.BooleanField(default=False)
        # Issue 18, added without a schema bump (database.ADDED_COLUMNS). ``certificate``: the fingerprint the
        # device can print (SHA-256 hex of the certificate it presented, or of its CSR's public key), which the
        # pairing code is cut from; ``certificate_info``: JSON of what an operator is shown (subject, issuer,
        # serial, validity; or subject and key type); ``csr``: the CSR (PEM, public) until the request is
        # decided; ``rotation``: a user's name with its right password and another certificate.
        certificate = pw.CharField(max_length=64, null=True)
        certificate_info = pw.TextField(null=True)
        csr = pw.TextField(null=True)
        rotation = pw.BooleanField(default=False)
        decided_by = pw.CharField(max_length=128, null=True)
        decided_at = pw.DoubleField(null=True)

        class Meta:
            table_name = "requests"
            indexes = ((("peer", "first_seen"), False),)

    class Role(Base):
        """A named set of permissions shared by its members (store/roles.py)."""

        name = pw.CharField(unique=True, max_length=64)
        created_at = pw.DoubleField()
        created_by = pw.CharField(max_length=128)

        class Meta:
            table_name = "roles"

    class RolePermission(Base):
        role = pw.ForeignKeyField(Role, backref="permissions", on_delete="CASCADE")
        pattern = pw.CharField(max_length=1024)  # may hold {username} / {client_id}, filled per member
        access = pw.CharField(max_length=16)  # read | write | readWrite

        class Meta:
            table_name = "role_permissions"
            indexes = ((("role", "pattern"), True),)

    class UserRole(Base):
        user = pw.ForeignKeyField(User, backref="roles", on_delete="CASCADE")
        role = pw.ForeignKeyField(Role, backref="members", on_delete="CASCADE")
        position = pw.IntegerField()  # the order of a user's roles (0 first)

        class Meta:
            table_name = "user_roles"
            indexes = ((("user", "role"), True),)

    class Window(Base):
        id = pw.IntegerField(primary_key=True)  # always 1
        unlocked_until = pw.DoubleField(null=True)
        unlocked_by = pw.CharField(max_length=128, null=True)

        class Meta:
            table_name = "window"

    class Knock(Base):
        """A device refused while locked: keyed by an HMAC of its name, so no device string is stored."""

        key = pw.CharField(primary_key=True, max_length=64)
        last_seen = pw.DoubleField(index=True)
        count = pw.IntegerField(default=1)

        class Meta:
            table_name = "knocks"

    class Throttle(Base):
        """New requests refused by the per-address limit, counted per peer address (recent ones only)."""

        peer = pw.CharField(primary_key=True, max_length=128)
        last_seen = pw.DoubleField(index=True)
        count = pw.IntegerField(default=1)

        class Meta:
            table_name = "throttles"

    class ApprovalRule(Base):
        """Admits matching new requests by itself while the registry is unlocked (store/approval_rules.py)."""

        name = pw.CharField(unique=True, max_length=64)
        pattern = pw.CharField(max_length=256)  # fnmatch glob on the NFC username, case-sensitive
        peer_network = pw.CharField(max_length=64, null=True)  # CIDR, as ipaddress writes it
        protocol = pw.CharField(max_length=8, null=True)  # mqtt | http
        client_id_pattern = pw.CharField(max_length=256, null=True)
        permissions = pw.TextField(default="[]")  # JSON [[pattern, access], ...]: the template granted
        roles = pw.TextField(default="[]")  # JSON [name, ...], in order
        admit_limit = pw.IntegerField(default=100)  # devices per unlock window
        admitted = pw.IntegerField(default=0)  # in the window that opened at admitted_window
        admitted_window = pw.DoubleField(null=True)
        expires_at = pw.DoubleField(null=True)
        created_at = pw.DoubleField()
        created_by = pw.CharField(max_length=128)

        class Meta:
            table_name = "approval_rules"

    class Presence(Base):
        """What the broker said of a user's connections (store/presence.py); not part of the audit log."""

        name = pw.CharField(primary_key=True, max_length=128)  # a user's name; the row goes with the user
        sessions = pw.IntegerField(default=0)  # live sessions as the server last counted them
        last_connected = pw.DoubleField(null=True)
        last_disconnected = pw.DoubleField(null=True)

        class Meta:
            table_name = "presence"

    class SiteAccount(Base):
        """An account the site's own broker has and the registry did not create (attach mode: read from the
        site's dynamic-security or password file by the server). Never requested, granted or added."""

        name = pw.CharField(primary_key=True, max_length=1024)  # NFC, as every name the store compares

        class Meta:
            table_name = "site_accounts"

    class RevokedCertificate(Base):
        """A certificate the registry signed whose user was removed or disabled: what the CRL lists
        (store/revocations.py). Serials are public (every CRL lists them)."""

        serial = pw.CharField(primary_key=True, max_length=64)  # lowercase hex
        username = pw.CharField(max_length=128)
        revoked_at = pw.DoubleField()
        reason = pw.CharField(max_length=16)  # removed | disabled (enabling the user again reinstates it)

        class Meta:
            table_name = "revoked_certificates"

    class Event(Base):
        id = pw.AutoField()
        time = pw.DoubleField()
        actor = pw.CharField(max_length=128)
        kind = pw.CharField(max_length=64)
        subject = pw.CharField(max_length=128, null=True, index=True)
        detail = pw.TextField(default="{}")  # JSON, never a secret

        class Meta:
            table_name = "events"

    return SimpleNamespace(
        Meta=Meta, User=User, Permission=Permission, Request=Request, Window=Window, Knock=Knock,
        Throttle=Throttle, ApprovalRule=ApprovalRule, Presence=Presence, Event=Event, Role=Role,
        SiteAccount=SiteAccount, RolePermission=RolePermission, UserRole=UserRole,
        RevokedCertificate=RevokedCertificate,
        all=[Meta, User, Permission, Request, Window, Knock, Throttle, ApprovalRule, Presence, SiteAccount, Event, Role,
             RolePermission, UserRole, RevokedCertificate],
    )
