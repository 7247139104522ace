-- Every OpenSSH certificate the SSH CA issued ([portal.ssh_ca], POST /ssh/v1/certificate):
-- the serial (u64, as decimal text: both backends' integers are signed 64-bit), who got it
-- and how they proved it, for which accounts and key, its validity (Unix seconds), and its
-- revocation (suspension of the identity or an account, or an admin's revoke).
CREATE TABLE ssh_certificates (
    serial TEXT PRIMARY KEY,
    identity_kind TEXT NOT NULL,
    identity_issuer TEXT NOT NULL,
    identity_subject TEXT NOT NULL,
    accounts TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    ca_fingerprint TEXT NOT NULL,
    key_id TEXT NOT NULL,
    valid_after BIGINT NOT NULL,
    valid_before BIGINT NOT NULL,
    source_addr TEXT,
    proof TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX ssh_certificates_identity ON ssh_certificates (identity_kind, identity_issuer, identity_subject);
CREATE INDEX ssh_certificates_valid_before ON ssh_certificates (valid_before);
