-- Podium schema 12: agents that joined through the API (see the SQLite file of the same
-- number). Times are the database's (epoch seconds): a lease is never judged by a
-- process's own clock.
CREATE TABLE joined_agents (
    id            text COLLATE "C" PRIMARY KEY,
    spec          text NOT NULL,
    token_id      text COLLATE "C" NOT NULL,
    registered_at double precision NOT NULL,
    expires_at    double precision NOT NULL
);
