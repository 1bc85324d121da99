-- Podium schema 9, PostgreSQL: registered workflows; as ../sqlite/009_workflows.sql.
CREATE TABLE registered_workflows (
    name          text COLLATE "C" NOT NULL,
    version       text COLLATE "C" NOT NULL,
    definition    text NOT NULL,
    digest        text NOT NULL,
    registered_at double precision NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX registered_workflows_newest ON registered_workflows (name, registered_at);
