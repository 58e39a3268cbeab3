-- The tracked-task table of the original bridge (Python, SQLAlchemy), adopted in place.
--
-- Why IF NOT EXISTS: operators migrate from the original with their existing database, and the
-- rows it holds are live work (tasks whose BuildRequests are pending or running). A database
-- that already has `tasks` keeps the table and its rows; a new database gets the same table.
-- Why the quoted mixed-case names: SQLAlchemy created them quoted ("taskId"), so on PostgreSQL
-- the names are case-sensitive and every statement of the bridge quotes them too; the index
-- names are SQLAlchemy's (`ix_<table>_<column>`), so an adopted table's indexes are recognised
-- and not duplicated.
-- New tables declare NOT NULL where the bridge always writes a value; an adopted table keeps
-- the original's nullable columns, which is harmless since the bridge never writes NULL there.
CREATE TABLE IF NOT EXISTS tasks (
    "buildrequestId" INTEGER NULL,
    "taskId" VARCHAR(32) NOT NULL,
    "runId" INTEGER NOT NULL,
    "createdDate" INTEGER NOT NULL,
    "processedDate" INTEGER NOT NULL,
    "takenUntil" INTEGER NULL,
    UNIQUE ("taskId", "runId")
);

CREATE INDEX IF NOT EXISTS "ix_tasks_buildrequestId" ON tasks ("buildrequestId");
CREATE INDEX IF NOT EXISTS "ix_tasks_taskId" ON tasks ("taskId");
CREATE INDEX IF NOT EXISTS "ix_tasks_takenUntil" ON tasks ("takenUntil");
