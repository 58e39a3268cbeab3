-- Buildbot 0.8 scheduler DB (Mozilla's 0.8.2 fork, schema v6): the five tables the bridge uses.
-- For tests and emulators only: Buildbot owns this schema and the bridge never runs this file
-- against a master's database. Index names are Buildbot's; on MySQL they are declared inside
-- CREATE TABLE (MySQL has no CREATE INDEX IF NOT EXISTS), with Buildbot's 255-character prefix
-- on VARCHAR(256) columns. Production masters used MyISAM; the default engine (InnoDB) is kept
-- here so that tests can observe transactional behaviour.
CREATE TABLE IF NOT EXISTS sourcestamps (
    id INTEGER NOT NULL AUTO_INCREMENT,
    branch VARCHAR(256) NULL,
    revision VARCHAR(256) NULL,
    patchid INTEGER NULL,
    repository TEXT NOT NULL DEFAULT '',
    project TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS buildsets (
    id INTEGER NOT NULL AUTO_INCREMENT,
    external_idstring VARCHAR(256) NULL,
    reason VARCHAR(256) NULL,
    sourcestampid INTEGER NOT NULL,
    submitted_at INTEGER NOT NULL,
    complete SMALLINT NOT NULL DEFAULT 0,
    complete_at INTEGER NULL,
    results SMALLINT NULL,
    PRIMARY KEY (id),
    INDEX buildsets_complete (complete),
    INDEX buildsets_submitted_at (submitted_at)
);

CREATE TABLE IF NOT EXISTS buildset_properties (
    buildsetid INTEGER NOT NULL,
    property_name VARCHAR(256) NOT NULL,
    property_value VARCHAR(1024) NOT NULL,
    INDEX buildset_properties_buildsetid (buildsetid)
);

CREATE TABLE IF NOT EXISTS buildrequests (
    id INTEGER NOT NULL AUTO_INCREMENT,
    buildsetid INTEGER NOT NULL,
    buildername VARCHAR(256) NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    claimed_at INTEGER DEFAULT 0,
    claimed_by_name VARCHAR(256) NULL,
    claimed_by_incarnation VARCHAR(256) NULL,
    complete INTEGER DEFAULT 0,
    results SMALLINT NULL,
    submitted_at INTEGER NOT NULL,
    complete_at INTEGER NULL,
    PRIMARY KEY (id),
    INDEX buildrequests_buildsetid (buildsetid),
    INDEX buildrequests_buildername (buildername(255)),
    INDEX buildrequests_complete (complete),
    INDEX buildrequests_claimed_at (claimed_at),
    INDEX buildrequests_claimed_by_name (claimed_by_name(255))
);

CREATE TABLE IF NOT EXISTS builds (
    id INTEGER NOT NULL AUTO_INCREMENT,
    number INTEGER NOT NULL,
    brid INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    finish_time INTEGER NULL,
    PRIMARY KEY (id),
    INDEX builds_number (number),
    INDEX builds_brid (brid)
);
