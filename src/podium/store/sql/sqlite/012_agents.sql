-- Podium schema 12: agents that joined through the API (`POST /agents`, `podium agent
-- serve --register`), so that every process that executes runs on this database (podium
-- serve, workers) calls them without an agents file naming them. A row lives while its
-- heartbeats come: expires_at (the store's clock, epoch seconds) moves with each; a
-- reader takes only rows not expired. spec is the agents-file entry as JSON (HTTP or
-- A2A only: a remote caller never names Python to import). token_id is the `agent`
-- token that registered it: only that token heartbeats or removes it while it lives.
CREATE TABLE joined_agents (
    id            TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    token_id      TEXT NOT NULL,
    registered_at REAL NOT NULL,
    expires_at    REAL NOT NULL
);
