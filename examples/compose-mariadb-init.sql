-- Run once by the mariadb container of compose.yaml, on its first start (empty volume), after
-- it created the `bbb` database and user from MARIADB_DATABASE / MARIADB_USER.
-- The second database is Buildbot 0.8's scheduler DB: `bbb sandbox` creates Buildbot's tables
-- in it when they are missing; against real masters it is theirs, not created here.
CREATE DATABASE IF NOT EXISTS scheduler CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
GRANT ALL PRIVILEGES ON scheduler.* TO 'bbb'@'%';
FLUSH PRIVILEGES;
