-- Podium schema 11, SQLite: the feed of every committed event in commit order, for
-- readers that follow all runs at once (`GET /events`, `podium runs --watch`).
--
-- The events table is keyed by (run_id, seq) without a rowid, so nothing in it says
-- which commit came first. One row here per committed batch names the events it wrote:
-- a JSON list of [run_id, first_seq, last_seq]. SQLite has one writer at a time and a
-- batch takes its number inside its own write transaction, so pos grows in commit order
-- and a reader never sees a lower one appear behind what it read (PostgreSQL's feed,
-- schema 6 there, orders by transaction id instead). Events committed before this
-- migration are not in the feed: it starts here.
CREATE TABLE feed (
    pos  INTEGER PRIMARY KEY,
    runs TEXT NOT NULL
);
