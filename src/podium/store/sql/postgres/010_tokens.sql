-- Podium schema 10, PostgreSQL: the API tokens of `podium serve`; as ../sqlite/010_tokens.sql.
CREATE TABLE api_tokens (
    id            text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    scope         text NOT NULL,
    salt          bytea NOT NULL,
    hash          bytea NOT NULL,
    created_at    double precision NOT NULL,
    expires_at    double precision,
    revoked_at    double precision,
    last_used_at  double precision
);
