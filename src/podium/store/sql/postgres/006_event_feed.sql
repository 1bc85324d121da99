-- Podium schema 6, PostgreSQL: the fleet's event feed (issue 14, item 10).
--
-- Alert rules are evaluated for the whole fleet by one process at a time (the holder
-- of the advisory lock of role "alerts"), from every worker's committed events. It
-- reads them in commit order, by the transaction that wrote them: every event row
-- carries its writer's transaction id, and a reader takes only rows of transactions
-- below its snapshot's xmin, which have all ended, so no row can later appear behind
-- its position (a plain sequence would: numbers are handed out before commit, and
-- two writers commit in either order). (tx, run_id, seq) orders the rows of one
-- transaction, and is the position a reader keeps.
ALTER TABLE events ADD COLUMN tx bigint NOT NULL
    DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_feed ON events (tx, run_id, seq);

-- Where a reader of the feed got to: the alert leader saves its position with every
-- read, so a new leader carries on from it (and `podium workers` shows who leads).
CREATE TABLE feed_positions (
    name   text COLLATE "C" PRIMARY KEY,  -- the role: "alerts"
    tx     bigint NOT NULL,
    run_id text COLLATE "C" NOT NULL,
    seq    bigint NOT NULL,
    holder text COLLATE "C" NOT NULL,     -- the worker (owner id) that read it
    saved  double precision NOT NULL      -- database time, epoch seconds
);
