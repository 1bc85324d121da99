-- Podium schema 9: workflows registered by name and version (`podium workflow register`),
-- which a step's `workflow: NAME` (and `version:`) finds when no file beside its own
-- defines NAME. Unlike `workflows` (the definition each run was started with, kept as
-- it came), a registered version never changes: registering the same name and version
-- again with the same content (digest: sha256 of its canonical JSON) is a no-op, with
-- other content it is refused (the fix is a new version). version is the string form
-- of the file's `version:` (3 and "3" are one version here: what a user types).
CREATE TABLE registered_workflows (
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    definition    TEXT NOT NULL,
    digest        TEXT NOT NULL,
    registered_at REAL NOT NULL,               -- the store's clock, epoch seconds
    PRIMARY KEY (name, version)
);
-- The newest version of a name: what `workflow: NAME` without `version:` runs.
CREATE INDEX registered_workflows_newest ON registered_workflows (name, registered_at);
