-- The tracked-task table of the original bridge (Python, SQLAlchemy), adopted in place.
--
-- Why IF NOT EXISTS: operators migrate from the original with their existing database, and the
-- rows it holds are live work (tasks whose BuildRequests are pending or running). A database
-- that already has `tasks` keeps the table and its rows; a new database gets the same table.
-- Why the indexes are declared inside CREATE TABLE rather than as CREATE INDEX IF NOT EXISTS:
-- MariaDB has that statement but MySQL (5.x, 8.x: the original ran on MySQL) does not; the
-- original created all three indexes with its table, so an adopted table already has them
-- under these SQLAlchemy names (`ix_<table>_<column>`).
-- Why `taskId` is utf8mb4_bin: taskIds are case-sensitive slugs; under MySQL's default
-- case-insensitive collation two tasks differing only in case would collide on the unique
-- key and sort as equals (keyset pagination). An adopted table keeps its original collation.
-- New tables declare NOT NULL where the bridge always writes a value; an adopted table keeps
-- the original's nullable columns, which is harmless since the bridge never writes NULL there.
CREATE TABLE IF NOT EXISTS tasks (
    `buildrequestId` INTEGER NULL,
    `taskId` VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `runId` INTEGER NOT NULL,
    `createdDate` INTEGER NOT NULL,
    `processedDate` INTEGER NOT NULL,
    `takenUntil` INTEGER NULL,
    UNIQUE (`taskId`, `runId`),
    INDEX `ix_tasks_buildrequestId` (`buildrequestId`),
    INDEX `ix_tasks_taskId` (`taskId`),
    INDEX `ix_tasks_takenUntil` (`takenUntil`)
) DEFAULT CHARSET = utf8mb4;
