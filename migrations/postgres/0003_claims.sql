-- claimedBy: which Build holds the current run's claim, "<master>/<builder>/<buildnumber>";
-- NULL until a Build claims the run (and on rows adopted from the original).
-- Why: a finished event handled twice (a retry after a crash) must not resolve a run that a
-- later Build of the same request now holds (after a RETRY the rerun's run belongs to the next
-- Build). The finished handler acts only when the run is unclaimed or claimed by its own Build.
-- taskExpires: the task's expiry (epoch s), read when the task is first seen.
-- Why: artifacts may not expire after their task; knowing it saves a task fetch per Build.
ALTER TABLE tasks
    ADD COLUMN "claimedBy" VARCHAR(512) NULL,
    ADD COLUMN "taskExpires" INTEGER NULL;
