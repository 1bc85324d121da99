-- Podium schema 6: nothing for SQLite. PostgreSQL's 006 adds the fleet's event feed
-- (the transaction id of every event row, and the feed readers' positions) for the
-- one process that evaluates alert rules for many workers; SQLite is one host, and
-- each process there evaluates the rules of the runs it executes. The number is
-- taken here too, so both dialects share one line of versions.
SELECT 1;
