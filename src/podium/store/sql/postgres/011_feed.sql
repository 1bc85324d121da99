-- Podium schema 11: nothing for PostgreSQL. SQLite's 011 adds a feed of every committed
-- event in commit order (`GET /events`, `podium runs --watch`); PostgreSQL has had one
-- since schema 6 (the transaction id of every event row). The number is taken here too,
-- so both dialects share one line of versions.
SELECT 1;
