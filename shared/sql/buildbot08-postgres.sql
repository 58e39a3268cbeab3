-- Buildbot 0.8 scheduler DB (Mozilla's 0.8.2 fork, schema v6): the five tables the bridge uses,
-- in PostgreSQL's dialect (Buildbot 0.8 also ran on PostgreSQL; Mozilla's masters did not).
-- For tests and emulators only: Buildbot owns this schema and the bridge never runs this file
-- against a master's database. Index names are Buildbot's.
CREATE TABLE IF NOT EXISTS sourcestamps (
    id SERIAL PRIMARY KEY,
    branch VARCHAR(256) NULL,
    revision VARCHAR(256) NULL,
    patchid INTEGER NULL,
    repository TEXT NOT NULL DEFAULT '',
    project TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS buildsets (
    id SERIAL PRIMARY KEY,
    external_idstring VARCHAR(256) NULL,
    reason VARCHAR(256) NULL,
    sourcestampid INTEGER NOT NULL,
    submitted_at INTEGER NOT NULL,
    complete SMALLINT NOT NULL DEFAULT 0,
    complete_at INTEGER NULL,
    results SMALLINT NULL
);
CREATE INDEX IF NOT EXISTS buildsets_complete ON buildsets (complete);
CREATE INDEX IF NOT EXISTS buildsets_submitted_at ON buildsets (submitted_at);

CREATE TABLE IF NOT EXISTS buildset_properties (
    buildsetid INTEGER NOT NULL,
    property_name VARCHAR(256) NOT NULL,
    property_value VARCHAR(1024) NOT NULL
);
CREATE INDEX IF NOT EXISTS buildset_properties_buildsetid ON buildset_properties (buildsetid);

CREATE TABLE IF NOT EXISTS buildrequests (
    id SERIAL PRIMARY KEY,
    buildsetid INTEGER NOT NULL,
    buildername VARCHAR(256) NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    claimed_at INTEGER DEFAULT 0,
    claimed_by_name VARCHAR(256) NULL,
    claimed_by_incarnation VARCHAR(256) NULL,
    complete INTEGER DEFAULT 0,
    results SMALLINT NULL,
    submitted_at INTEGER NOT NULL,
    complete_at INTEGER NULL
);
CREATE INDEX IF NOT EXISTS buildrequests_buildsetid ON buildrequests (buildsetid);
CREATE INDEX IF NOT EXISTS buildrequests_buildername ON buildrequests (buildername);
CREATE INDEX IF NOT EXISTS buildrequests_complete ON buildrequests (complete);
CREATE INDEX IF NOT EXISTS buildrequests_claimed_at ON buildrequests (claimed_at);
CREATE INDEX IF NOT EXISTS buildrequests_claimed_by_name ON buildrequests (claimed_by_name);

CREATE TABLE IF NOT EXISTS builds (
    id SERIAL PRIMARY KEY,
    number INTEGER NOT NULL,
    brid INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    finish_time INTEGER NULL
);
CREATE INDEX IF NOT EXISTS builds_number ON builds (number);
CREATE INDEX IF NOT EXISTS builds_brid ON builds (brid);
