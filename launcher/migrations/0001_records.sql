-- Schema 1 of the controller's PostgreSQL store (launcher/src/controller/postgres.rs):
-- one row per network and per member, each record in the JSON form the embedded redb
-- store keeps (zt-core controller::record), decoded strictly when read.
CREATE TABLE zt_meta (
    key text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO zt_meta (key, value) VALUES ('last_issued', 0);

CREATE TABLE zt_networks (
    nwid bigint PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE zt_members (
    nwid bigint NOT NULL REFERENCES zt_networks (nwid) ON DELETE CASCADE,
    member bigint NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (nwid, member)
);
