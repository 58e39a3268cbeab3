-- Columns the original did not have, all nullable: rows adopted from the original simply have
-- NULL there, and nothing may depend on them being set.
-- Why: with the builder name and the (shortened) sourcestamp branch on the row, inspection and
-- the periodic scan can report and group tracked tasks without a query into Buildbot's
-- scheduler DB (another owner, often another server).
-- (SQLite takes one ADD COLUMN per ALTER TABLE.)
ALTER TABLE tasks ADD COLUMN buildername VARCHAR(256) NULL;
ALTER TABLE tasks ADD COLUMN branch VARCHAR(256) NULL;
